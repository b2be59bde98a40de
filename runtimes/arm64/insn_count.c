/* Guest instructions between two marks the guest sets itself (qemu user mode, plugin API v1).
 *
 * The worker calls syscall MARK_SYSCALL with argument 1 before an inference and 2 after it; imports,
 * file reads and set-up in between inferences are not counted. Every translated block adds its
 * instruction count to one counter inline (fast, no callback per block); the marks read it. One line
 * per marked span goes to qemu's plugin log (-d plugin -D FILE): "span <k> <instructions>".
 * Counting is exact for one guest thread, which is how the worker runs (1 thread).
 */
#include <inttypes.h>
#include <stdio.h>
#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 0x4e4f  /* unused by Linux on arm64: qemu answers -ENOSYS and goes on */

static uint64_t executed;
static uint64_t span_start;
static unsigned span_index;

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != MARK_SYSCALL) {
        return;
    }
    if (a1 == 1) {
        span_start = executed;
    } else if (a1 == 2) {
        char line[64];
        snprintf(line, sizeof line, "span %u %" PRIu64 "\n", span_index++, executed - span_start);
        qemu_plugin_outs(line);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
