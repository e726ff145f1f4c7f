/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C shims for what Rust cannot call directly: static inline functions and
 * macros of the block and device-mapper headers. Each is a one-liner; the
 * logic lives in Rust.
 */
#ifndef DM_SPECMIRROR_HELPERS_H
#define DM_SPECMIRROR_HELPERS_H

#include <linux/types.h>
#include <linux/spinlock_types.h>

struct bio;
struct dm_target;
struct block_device;
struct net;
struct page;
struct socket;

/* Remap @bio to @bdev at the same offset inside the target (dm-linear). */
void dmsm_bio_remap(struct bio *bio, struct dm_target *ti,
		    struct block_device *bdev);
/* REQ_OP_* of @bio. */
unsigned int dmsm_bio_op(const struct bio *bio);
/* Non-zero if the bio carries REQ_PREFLUSH / REQ_FUA. */
int dmsm_bio_is_preflush(const struct bio *bio);
int dmsm_bio_is_fua(const struct bio *bio);
/* Size of @bio in sectors. */
unsigned int dmsm_bio_sectors(const struct bio *bio);

/* spin_lock_irqsave / spin_unlock_irqrestore (macros). */
unsigned long dmsm_spin_lock_irqsave(spinlock_t *lock);
void dmsm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

/* True in a kthread asked to stop; false (no warning) in any other task. */
bool dmsm_kthread_should_stop(void);

/*
 * get_net(current->nsproxy->net_ns), or NULL if the task has no namespaces
 * (exiting); get_net() / put_net() of a held reference.
 */
struct net *dmsm_get_current_net(void);
struct net *dmsm_get_net(struct net *net);
void dmsm_put_net(struct net *net);

/* sock_create_kern(net, family, SOCK_STREAM, IPPROTO_TCP, res). */
int dmsm_sock_create_tcp(struct net *net, int family, struct socket **res);
/*
 * Prepares a kernel TCP socket for block I/O, as nbd and DRBD do:
 * GFP_NOIO allocations, no current->task_frag, memalloc reserves, TCP_NODELAY.
 */
void dmsm_sock_setup_io(struct socket *sock);
/* Connect and send timeout in jiffies (0 = none). */
void dmsm_sock_set_sndtimeo(struct socket *sock, long timeout);
/* SO_REUSEADDR. */
void dmsm_sock_set_reuseaddr(struct socket *sock);
/* Undoes sk_set_memalloc if set, then sock_release(). */
void dmsm_sock_release(struct socket *sock);

/* page_address() (no highmem on the supported arches). */
void *dmsm_page_address(struct page *page);

/* The kernel's crc32c(): raw, no pre/post inversion. */
u32 dmsm_crc32c(u32 crc, const void *data, size_t len);

/* Runs fn(arg) once in hard irq context (irq_work) and waits for it. */
void dmsm_call_in_hardirq(void (*fn)(void *arg), void *arg);

/* Module parameter dmsm_selftest (developer only, see the docs). */
bool dmsm_selftest_enabled(void);

#endif
