"""arm64, the phones' instruction set, emulated on this x86 machine (qemu user mode).

``target`` says what the emulated phone CPUs are and where their set-up lives; ``setup`` builds it
(`make arm64`); ``runner`` opens an artifact on one emulated CPU behind the common session interface;
``worker`` is the script that runs *inside* the emulated Python (numpy and the runtimes only).
"""
