/* Guest instructions between two marks the guest sets itself (qemu user mode).
 *
 * Builds against the qemu-plugin.h of qemu 10 (plugin API v4: per-vCPU scoreboards; the counting emulator)
 * and of Debian 12's qemu 7.2 (API v1: plain counters; the cross-check emulator): the same guest code gives
 * the same counts under both (runtimes/arm64/setup.py).
 *
 * The worker calls syscall MARK_SYSCALL with argument 1 to open a span and 2 to close it; imports and file
 * reads outside spans are not counted. Every translated block adds its instruction count to a counter
 * inline (no callback per block); the few instructions of the classes below add to their own counter too
 * (decoded once, at translation). One line per span goes to qemu's plugin log (-d plugin -D FILE):
 *
 *     span <k> <instructions> dot=<n> i8mm=<n> fp16=<n> bf16=<n> sve=<n>
 *
 * dot: SDOT/UDOT (Armv8.2 dot product); i8mm: SMMLA/UMMLA/USMMLA/USDOT/SUDOT (Armv8.6 int8 matrix
 * multiply); fp16: Advanced SIMD half-precision arithmetic (three-same and FMLA/FMLS by element);
 * bf16: BFDOT/BFMMLA/BFMLAL; sve: any SVE instruction. They say which kernels a runtime chose on a core.
 *
 * With the plugin argument profile=on, each span is followed by one line per translated block start that
 * ran in it: "tb <k> <guest address, hex> <instructions>" (the host maps addresses to symbols).
 * Counting is exact for one guest thread, which is how the worker runs (1 thread).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 0x4e4f  /* unused by Linux on arm64: qemu answers -ENOSYS and goes on */

enum { DOT, I8MM, FP16, BF16, SVE, N_CLASSES };
static const char *class_names[N_CLASSES] = {"dot", "i8mm", "fp16", "bf16", "sve"};

/* A64 encodings (Arm ARM, "Advanced SIMD" and "SVE" groups): (word & mask) == value */
static const struct { int cls; uint32_t mask, value; } patterns[] = {
    {DOT, 0x9FE0FC00, 0x0E809400},   /* SDOT/UDOT (vector) */
    {DOT, 0x9FC0F400, 0x0F80E000},   /* SDOT/UDOT (by element) */
    {I8MM, 0xDFE0FC00, 0x4E80A400},  /* SMMLA/UMMLA */
    {I8MM, 0xFFE0FC00, 0x4E80AC00},  /* USMMLA */
    {I8MM, 0xBFE0FC00, 0x0E809C00},  /* USDOT (vector) */
    {I8MM, 0xBF40F400, 0x0F00F000},  /* SUDOT/USDOT (by element) */
    {FP16, 0x9F60C400, 0x0E400400},  /* three registers of the same type, half precision (FMLA, FADD, FMUL...) */
    {FP16, 0xBFC0B400, 0x0F001000},  /* FMLA/FMLS (by element), half precision */
    {BF16, 0xFFE0FC00, 0x6E40EC00},  /* BFMMLA */
    {BF16, 0xBFE0FC00, 0x2E40FC00},  /* BFDOT (vector) */
    {BF16, 0xBFC0F400, 0x0F40F000},  /* BFDOT (by element) */
    {BF16, 0xBFE0FC00, 0x2EC0FC00},  /* BFMLALB/T (vector) */
    {SVE, 0x1E000000, 0x04000000},   /* op0 = 0010: the SVE encoding space */
};

static int classify(uint32_t word)
{
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        if ((word & patterns[i].mask) == patterns[i].value) {
            return patterns[i].cls;
        }
    }
    return -1;
}

/* Per translated-block start address, for profile=on. */
typedef struct {
    uint64_t vaddr;
    uint64_t at_span_start;
#if QEMU_PLUGIN_VERSION >= 2
    struct qemu_plugin_scoreboard *board;
    qemu_plugin_u64 insns;
#else
    uint64_t insns;
#endif
} Block;

static gboolean profile;
static GHashTable *blocks;
static GMutex lock;
static unsigned span_index;
static uint64_t span_start[1 + N_CLASSES];

#if QEMU_PLUGIN_VERSION >= 2
/* qemu >= 9: inline operations write per-vCPU scoreboard entries (the plain-pointer form is gone); a count
 * is their sum, i.e. every guest thread, as the single counters of API v1 are. */
typedef struct { uint64_t total; uint64_t cls[N_CLASSES]; } Counters;
static struct qemu_plugin_scoreboard *board;
static qemu_plugin_u64 total;
static qemu_plugin_u64 cls[N_CLASSES];

static uint64_t read_counter(int k)
{
    return qemu_plugin_u64_sum(k == 0 ? total : cls[k - 1]);
}

static uint64_t block_insns(Block *b)
{
    return qemu_plugin_u64_sum(b->insns);
}

static uint32_t insn_word(struct qemu_plugin_insn *insn)
{
    uint32_t word = 0;
    qemu_plugin_insn_data(insn, &word, sizeof word);
    return word;
}

static void add_on_tb(struct qemu_plugin_tb *tb, Block *b, size_t n)
{
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, total, n);
    if (b) {
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, b->insns, n);
    }
}

static void add_on_insn(struct qemu_plugin_insn *insn, int k)
{
    qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64, cls[k], 1);
}

static Block *new_block(uint64_t vaddr)
{
    Block *b = g_new0(Block, 1);
    b->vaddr = vaddr;
    b->board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    b->insns = qemu_plugin_scoreboard_u64(b->board);
    return b;
}

static void set_up_counters(void)
{
    board = qemu_plugin_scoreboard_new(sizeof(Counters));
    total = qemu_plugin_scoreboard_u64_in_struct(board, Counters, total);
    for (int k = 0; k < N_CLASSES; k++) {
        cls[k] = qemu_plugin_scoreboard_u64_in_struct(board, Counters, cls[k]);
    }
}
#else
static uint64_t counters[1 + N_CLASSES];

static uint64_t read_counter(int k)
{
    return counters[k];
}

static uint64_t block_insns(Block *b)
{
    return b->insns;
}

static uint32_t insn_word(struct qemu_plugin_insn *insn)
{
    uint32_t word = 0;
    memcpy(&word, qemu_plugin_insn_data(insn), sizeof word);
    return word;
}

static void add_on_tb(struct qemu_plugin_tb *tb, Block *b, size_t n)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counters[0], n);
    if (b) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->insns, n);
    }
}

static void add_on_insn(struct qemu_plugin_insn *insn, int k)
{
    qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[1 + k], 1);
}

static Block *new_block(uint64_t vaddr)
{
    Block *b = g_new0(Block, 1);
    b->vaddr = vaddr;
    return b;
}

static void set_up_counters(void)
{
}
#endif

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    Block *b = NULL;
    if (profile) {
        uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
        g_mutex_lock(&lock);
        b = g_hash_table_lookup(blocks, &vaddr);
        if (!b) {
            b = new_block(vaddr);
            g_hash_table_insert(blocks, &b->vaddr, b);
        }
        g_mutex_unlock(&lock);
    }
    add_on_tb(tb, b, n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_size(insn) == 4) {
            int k = classify(insn_word(insn));
            if (k >= 0) {
                add_on_insn(insn, k);
            }
        }
    }
}

static void start_blocks(gpointer key, gpointer value, gpointer data)
{
    Block *b = value;
    b->at_span_start = block_insns(b);
}

static void write_blocks(gpointer key, gpointer value, gpointer data)
{
    Block *b = value;
    uint64_t ran = block_insns(b) - b->at_span_start;
    if (ran) {
        char line[96];
        snprintf(line, sizeof line, "tb %u %" PRIx64 " %" PRIu64 "\n", *(unsigned *)data, b->vaddr, ran);
        qemu_plugin_outs(line);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != MARK_SYSCALL) {
        return;
    }
    if (a1 == 1) {
        for (int k = 0; k <= N_CLASSES; k++) {
            span_start[k] = read_counter(k);
        }
        if (profile) {
            g_mutex_lock(&lock);
            g_hash_table_foreach(blocks, start_blocks, NULL);
            g_mutex_unlock(&lock);
        }
    } else if (a1 == 2) {
        GString *line = g_string_new(NULL);
        g_string_printf(line, "span %u %" PRIu64, span_index, read_counter(0) - span_start[0]);
        for (int k = 0; k < N_CLASSES; k++) {
            g_string_append_printf(line, " %s=%" PRIu64, class_names[k], read_counter(1 + k) - span_start[1 + k]);
        }
        g_string_append_c(line, '\n');
        qemu_plugin_outs(line->str);
        g_string_free(line, TRUE);
        if (profile) {
            g_mutex_lock(&lock);
            g_hash_table_foreach(blocks, write_blocks, &span_index);
            g_mutex_unlock(&lock);
        }
        span_index++;
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "profile=on") == 0) {
            profile = TRUE;
        }
    }
    set_up_counters();
    blocks = g_hash_table_new(g_int64_hash, g_int64_equal);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
