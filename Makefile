# SPDX-License-Identifier: GPL-2.0
#
# dm-specmirror. The two commands:
#   make check   everything: deps, core tests, simulator, module, VM selftests
#   make demo    two "hosts" (network namespaces) in a VM, data through a mirror
#
# Kbuild (next to this file) describes the module to the kernel's build,
# which reads it in preference to this Makefile.

SHELL := /bin/bash
REPO := $(CURDIR)
SEEDS ?= 2000
FUZZ_SECONDS ?= 15
# KDIR: a Rust-enabled 6.12+ build tree. Default: the cached debug build
# (built on first use by scripts/build-kernel.sh, ~12 minutes).
KDIR ?=
kdir = $${KDIR:-$$(scripts/build-kernel.sh debug)}
KMAKE = $(MAKE) -C "$$kdir" M=$(REPO) LLVM=-19

export PATH := $(HOME)/.cargo/bin:$(PATH)
# Cargo's builds live in the cache, as the kernels do: a fresh clone (CI)
# then recompiles only the project's own crates, not every dependency.
DMSM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dm-specmirror
export CARGO_TARGET_DIR ?= $(DMSM_CACHE)/cargo-target
export LIBCLANG_PATH ?= /usr/lib/llvm-19/lib

.PHONY: all module clippy deps kernel kernel-release kernel-uml module-uml test-core \
	sim sim-report fuzz-smoke selftests selftests-uml faults faults-smp check soak \
	soak-uml demo demo-vm bench-quick bench clean help

all: module

help:
	@echo "make check        deps, core tests, simulator, module, clippy, VM selftests"
	@echo "make demo         replication demo between two network namespaces, under User-Mode Linux"
	@echo "make demo-vm      the same demo in the TCG VM"
	@echo "make module       build dm-specmirror.ko against KDIR (default: cached debug kernel)"
	@echo "make CLIPPY=1     module build with clippy"
	@echo "make test-core    userspace tests of the pure core (cargo test)"
	@echo "make sim SEEDS=N  run the deterministic simulator over N seeds"
	@echo "make sim-report   simulated throughput/lag per mode and RTT"
	@echo "make faults       the fault and hostile-input suite: UML, then the SMP scenarios in the VM"
	@echo "make soak         DMSM_SOAK_SECONDS (600) of mixed load with random faults in the SMP VM"
	@echo "make soak-uml     the same soak under User-Mode Linux (one CPU: longer soaks for the time)"
	@echo "make selftests-uml  the selftests under User-Mode Linux (DMSM_TESTS: a list)"
	@echo "make bench-quick  release kernel, RTT 10 ms, under 10 min: issue 20's headline ratios (vs DRBD A/C, lock-sync)"
	@echo "make bench        release kernel: vs dm-linear, DRBD 8.4, dm-mirror+NBD at RTT 0-50 ms (QUICK=1: short)"
	@echo "make kernel       build the debug (test) kernel into the cache"
	@echo "make kernel-release  build the release (benchmark) kernel"
	@echo "make kernel-uml   build the User-Mode Linux (fast test) kernel"

deps:
	scripts/deps.sh

kernel:
	scripts/build-kernel.sh debug

kernel-release:
	scripts/build-kernel.sh release

kernel-uml:
	scripts/build-kernel.sh uml

# The module for the UML kernel, built in a copy under the cache.
module-uml:
	@scripts/build-module.sh uml

module:
	@kdir=$(kdir) && $(KMAKE) modules

clippy:
	@kdir=$(kdir) && $(KMAKE) CLIPPY=1 modules

test-core:
	cargo test --workspace --quiet
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	RUSTFLAGS="-D missing_docs -D unreachable_pub -D rust_2018_idioms" \
		cargo build -p specmirror-core --quiet --target-dir "$(CARGO_TARGET_DIR)/kernel-lints"

sim:
	cargo run --release --quiet -p specmirror-sim -- run --seeds $(SEEDS)

sim-report:
	cargo run --release --quiet -p specmirror-sim -- report

fuzz-smoke:
	scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

# vm_selftests ENV: install selftests/ into the kernel tree, then run them
# in the VM with ENV (DMSM_TESTS: a list; DMSM_RUN_ONE: one script alone).
vm_selftests = @kdir=$(kdir) && inst=$$(scripts/install-selftests.sh "$$kdir") && \
	DMSM_KSFT_DIR=$$inst $(1) scripts/vm.sh scripts/run-selftests.sh

# uml_selftests ENV: the same under User-Mode Linux, with the module built
# for the UML kernel.
uml_selftests = @kdir=$$(scripts/build-kernel.sh uml) && inst=$$(scripts/install-selftests.sh "$$kdir") && \
	mod=$$(scripts/build-module.sh uml) && DMSM_KSFT_DIR=$$inst DMSM_MODULE=$$mod $(1) scripts/uml.sh scripts/run-selftests.sh

selftests: module
	$(call vm_selftests,)

selftests-uml:
	$(call uml_selftests,)

check:
	@scripts/check.sh

# The fault and hostile-input scenarios (the soak is `make soak`). Those
# that need no second CPU run under UML (FAULT_TESTS_UML); those that race
# two CPUs run in the SMP VM (FAULT_TESTS_SMP, `make faults-smp` alone).
# selftests/README.md says which test runs where and why.
FAULT_TESTS_UML := lifecycle.sh faults_link.sh faults_badnet.sh faults_corrupt.sh degraded_slow.sh \
	faults_lock.sh faults_disk.sh faults_ringfull.sh bad_tables_gen.sh \
	hostile.sh hostile_source.sh faults_remove.sh suspend_bounded.sh
FAULT_TESTS_SMP := faults_remove.sh unstable_pages.sh degraded_slow.sh
faults:
	$(call uml_selftests,DMSM_TESTS="$(FAULT_TESTS_UML)")
	@$(MAKE) -s faults-smp

faults-smp: module
	$(call vm_selftests,DMSM_TESTS="$(FAULT_TESTS_SMP)")

# DMSM_SOAK_SECONDS (600) of load with random faults.
soak: module
	$(call vm_selftests,DMSM_RUN_ONE=soak.sh)

soak-uml:
	$(call uml_selftests,DMSM_RUN_ONE=soak.sh)

# The demo takes the fastest path: User-Mode Linux (boots in a second;
# its kernel builds in about as long as the debug kernel). `make demo-vm`
# runs it in the TCG VM instead.
demo:
	@scripts/deps.sh && scripts/build-kernel.sh uml >/dev/null && \
		mod=$$(scripts/build-module.sh uml) && DMSM_MODULE=$$mod scripts/uml.sh scripts/demo.sh

demo-vm:
	@scripts/deps.sh && kdir=$(kdir) && $(KMAKE) modules && \
		scripts/vm.sh scripts/demo.sh

bench-quick:
	@scripts/deps.sh && scripts/bench-quick.sh

bench:
	@scripts/deps.sh && QUICK=$(QUICK) scripts/bench.sh

clean:
	rm -f transport/sys/bindings_generated.rs *.ko *.o transport/sys/*.o *.mod *.mod.c modules.order Module.symvers
	find . -name '.*.cmd' -not -path './target/*' -delete
	cargo clean
