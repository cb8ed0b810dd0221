// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim: make this process see an AVX2-only x86 CPU (no AVX-512, no VNNI, no AMX) through CPUID.
//
// Why: onnxruntime (MLAS), LLVM's host detection and numpy choose their kernels from CPUID. On a host with
// AVX-512 VNNI this shim lets bench/cpu_latency.py time every runtime on the AVX2 code paths an AVX2-only
// CPU would run (e.g. onnxruntime's u8 x s8 vpmaddubsw kernels), in separate processes as usual. The
// micro-architecture stays the host's: the figures show AVX2 code on this core, not on a Zen 3.
//
// How: Linux CPUID faulting (arch_prctl ARCH_SET_CPUID 0, /proc/cpuinfo flag cpuid_fault) turns every
// CPUID instruction of the process into SIGSEGV; the handler executes the real CPUID with faulting briefly
// off, clears the feature bits below, writes the result into the registers and steps over the instruction.
// The setting is per thread and inherited by threads and forks (execve resets it; LD_PRELOAD re-applies it).
// glibc resolves its own string functions before this constructor runs, so they keep their AVX-512 forms.
// Libraries that install their own SIGSEGV handler (TVM's backtrace printer) get it chained behind this one:
// sigaction/signal are wrapped so the shim stays first and passes every other fault on.
//
//   gcc -O2 -shared -fPIC -o /tmp/avx2_host.so bench/avx2_host.c
//   LD_PRELOAD=/tmp/avx2_host.so python bench/cpu_latency.py ...
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

#define BIT(n) (1u << (n))

static void mask(unsigned leaf, unsigned sub, unsigned r[4]) {  // r: eax, ebx, ecx, edx
    if (leaf == 7 && sub == 0) {
        // ebx: AVX512F DQ IFMA PF ER CD BW VL
        r[1] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        // ecx: AVX512_VBMI VBMI2 VNNI BITALG VPOPCNTDQ
        r[2] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        // edx: AVX512_4VNNIW 4FMAPS VP2INTERSECT AMX_BF16 AVX512_FP16 AMX_TILE AMX_INT8
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        // eax: AVX_VNNI AVX512_BF16 AMX_FP16 AVX_IFMA; edx: AVX_VNNI_INT8 AVX_NE_CONVERT AVX_VNNI_INT16 AVX10
        r[0] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        r[3] &= ~(BIT(4) | BIT(5) | BIT(10) | BIT(19));
    } else if (leaf == 0xd && sub == 0) {
        r[0] &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18));  // opmask / zmm / AMX tile state
    } else if (leaf == 0x1e || leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0;  // AMX tile info, AVX10 info
    }
}

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction next_handler;  // what the program asked for SIGSEGV (default: SIG_DFL)

static void pass_on(int sig, siginfo_t *si, void *ctx) {
    if (next_handler.sa_flags & SA_SIGINFO) {
        next_handler.sa_sigaction(sig, si, ctx);
    } else if (next_handler.sa_handler != SIG_DFL && next_handler.sa_handler != SIG_IGN) {
        next_handler.sa_handler(sig);
    } else {  // a real fault with no handler: die as without the shim (the instruction faults again)
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (si->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        pass_on(sig, si, ctx);
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
    (void)sig;
    (void)si;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV) return real_sigaction(sig, act, old);
    if (old) *old = next_handler;
    if (act) next_handler = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
}

__attribute__((constructor)) static void avx2_host(void) {
    struct sigaction sa;
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    next_handler.sa_handler = SIG_DFL;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    real_sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "avx2_host: this kernel or CPU has no CPUID faulting (cpuid_fault); not masking\n");
    }
}
