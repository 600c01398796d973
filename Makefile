# pancake: build, install, demo and test.
#
#   make demo      build, install into flux-core's directories, run the demo pod
#   make test      tier 1 always, tier 2 (real brokers) when flux-core is installed
#                  (PANCAKE_FLUX_PREFIXES=/p1:/p2: tier 2 once per flux-core prefix)
#   make bench     direct vs pancake vs pancake+gRPC on the simulated pod
#                  (BENCH_ARGS="--jobs 1000 --csv bench.csv"; see bench/README.md)
#   make install / make uninstall   (DESTDIR and PREFIX are honoured)
#
# flux-core is whatever `pkg-config flux-core` finds: for one in its own
# prefix set PKG_CONFIG_PATH=/prefix/lib/pkgconfig and nothing else (the
# binaries get a runtime path to its libdir; docs/compatibility.md).
#
# install builds the release first; `make install NOBUILD=1 TARGET=dir`
# installs what is already built in dir (the install test uses the debug
# build this way).

CARGO    ?= cargo
PREFIX   ?= /usr/local
DESTDIR  ?=
PKG      := pkg-config
HAVE_FLUX := $(shell $(PKG) --exists flux-core 2>/dev/null && echo yes)
FLUX_MODDIR    ?= $(shell $(PKG) --variable=fluxmoddir flux-core 2>/dev/null)
FLUX_PLUGINDIR ?= $(shell $(PKG) --variable=fluxlibdir flux-core 2>/dev/null)/job-manager/plugins
FLUX_CMDDIR    ?= $(shell $(PKG) --variable=fluxcmddir flux-core 2>/dev/null)
# Where cargo puts the release build (it follows CARGO_TARGET_DIR).
TARGET   ?= $(or $(CARGO_TARGET_DIR),target)/release
NOBUILD  ?=

# Installed names matter: Flux names a module (and a jobtap plugin) after its
# file name up to the first dot, and `flux NAME` runs flux-NAME from its
# command directory. The Flux directories come from flux-core (that is where
# flux looks); PREFIX places only the gRPC server.
MODULE   := $(DESTDIR)$(FLUX_MODDIR)/pancake.so
PLUGIN   := $(DESTDIR)$(FLUX_PLUGINDIR)/pancake-bypass.so
COMMAND  := $(DESTDIR)$(FLUX_CMDDIR)/flux-pancake
SERVER   := $(DESTDIR)$(PREFIX)/bin/pancake-fluxion

.PHONY: all build install uninstall demo test bench check-flux

all: build

build:
	$(CARGO) build --locked --release -p pancake-core -p fluxion -p fluxion-grpc
ifeq ($(HAVE_FLUX),yes)
	$(CARGO) build --locked --release -p pancake-module -p pancake-bypass -p flux-pancake -p pancake-t
endif

check-flux:
	@test "$(HAVE_FLUX)" = yes || { echo "pancake: flux-core is not installed (pkg-config flux-core failed); install flux-core first" >&2; exit 1; }

install: check-flux $(if $(filter 1,$(NOBUILD)),,build)
	install -D -m 0755 $(TARGET)/libpancake.so $(MODULE)
	install -D -m 0755 $(TARGET)/libpancake_bypass.so $(PLUGIN)
	install -D -m 0755 $(TARGET)/flux-pancake $(COMMAND)
	install -D -m 0755 $(TARGET)/pancake-fluxion $(SERVER)
	@echo "installed: $(MODULE) $(PLUGIN) $(COMMAND) $(SERVER)"

# check-flux: without flux-core the paths above would lose their directories.
uninstall: check-flux
	rm -f $(MODULE) $(PLUGIN) $(COMMAND) $(SERVER)

demo: install
	$(TARGET)/pancake-pod demo --installed

test:
	t/run-tests

# Never part of `make test` or CI: it takes minutes and its numbers depend on
# the machine. It needs the cdylibs and pancake-fluxion next to its binary.
BENCH_ARGS ?=
bench: check-flux
	$(CARGO) build --locked --release -p pancake-module -p pancake-bypass -p pancake-bench -p pancake-bench-testexec
	$(CARGO) build --locked --release -p fluxion-grpc --bin pancake-fluxion
	$(CARGO) run --locked --release -p pancake-bench -- $(BENCH_ARGS)
