/* wrapper.h - the flux-core headers flux-sys binds.
 *
 * core.h is the umbrella for flux/core/{flux,kvs,job,jobspec1,subprocess}.h.
 * jobtap.h declares flux_jobtap_*, which live in the job-manager module, not
 * in libflux-core: they are declared here and resolved when the job-manager
 * dlopens a plugin (see flux-sys/src/lib.rs).
 */
#include <flux/core.h>
#include <flux/jobtap.h>
#include <flux/idset.h>
#include <flux/hostlist.h>

/* Typed copies of macros bindgen cannot evaluate. */
const uint32_t FLUX_SYS_NODEID_ANY = FLUX_NODEID_ANY;
const uint32_t FLUX_SYS_NODEID_UPSTREAM = FLUX_NODEID_UPSTREAM;
const uint32_t FLUX_SYS_MATCHTAG_NONE = FLUX_MATCHTAG_NONE;
const uint32_t FLUX_SYS_USERID_UNKNOWN = FLUX_USERID_UNKNOWN;
const int64_t FLUX_SYS_JOBID_ANY = FLUX_JOBID_ANY;

/* Module threads run with cancellation disabled (see flux/src/module.rs). */
#include <pthread.h>
const int FLUX_SYS_PTHREAD_CANCEL_DISABLE = PTHREAD_CANCEL_DISABLE;
