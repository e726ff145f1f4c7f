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
/* bdev_logical_block_size(): the device's smallest addressable unit. */
unsigned int dmsm_bdev_logical_block_size(struct block_device *bdev);

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
 * GFP_NOIO allocations, no current->task_frag, memalloc reserves, TCP_NODELAY;
 * and dead-peer detection: keepalive probes and a 20 s user timeout.
 */
void dmsm_sock_setup_io(struct socket *sock);
/* Connect and send timeout in jiffies (0 = none). */
void dmsm_sock_set_sndtimeo(struct socket *sock, long timeout);
/* SO_REUSEADDR. */
void dmsm_sock_set_reuseaddr(struct socket *sock);
/* SO_LINGER with a zero timeout: release resets the connection (RST) and
 * drops what was not sent yet instead of sending it first. */
void dmsm_sock_set_abortive_close(struct socket *sock);
/* Undoes sk_set_memalloc if set, then sock_release(). */
void dmsm_sock_release(struct socket *sock);
/*
 * One reference on the kernel's memalloc-sockets static key, taken at
 * module load and dropped at unload, so that the sk_set_memalloc() and
 * sk_clear_memalloc() of every (re)connection only count, never patch
 * kernel text (see net.rs, MemallocSocks).
 */
void dmsm_memalloc_socks_get(void);
void dmsm_memalloc_socks_put(void);

/* page_address() (no highmem on the supported arches). */
void *dmsm_page_address(struct page *page);

/* The kernel's crc32c(): raw, no pre/post inversion. */
u32 dmsm_crc32c(u32 crc, const void *data, size_t len);

/* Runs fn(arg) once in hard irq context (irq_work) and waits for it. */
void dmsm_call_in_hardirq(void (*fn)(void *arg), void *arg);


/* --- bios dm hands to the target --------------------------------------- */

/* dm_per_bio_data(bio, size). */
void *dmsm_per_bio_data(struct bio *bio, size_t size);
/*
 * Calls cb(ctx, data, len) for each segment of @bio's payload, in order,
 * mapped with kmap_local (callable in atomic context); stops at and returns
 * the first non-zero return of @cb.
 */
int dmsm_bio_copy_data(struct bio *bio,
		       int (*cb)(void *ctx, const void *data, unsigned int len),
		       void *ctx);
/* Ends @bio with @status (a blk_status_t). */
void dmsm_bio_endio(struct bio *bio, u8 status);
/* Remaps @bio like dmsm_bio_remap and submits it (dm_submit_bio_remap). */
void dmsm_bio_submit_remapped(struct bio *bio, struct dm_target *ti,
			      struct block_device *bdev);
/* Caps discard and write-zeroes bios at @max sectors (io_hints). */
struct queue_limits;
void dmsm_limit_abnormal_io(struct queue_limits *limits, unsigned int max);

/* --- bios the target role builds to apply records ---------------------- */

struct bio_set;
/* A bio_set whose bios carry the owner and seq of their record. */
struct bio_set *dmsm_bioset_create(unsigned int pool_size);
void dmsm_bioset_destroy(struct bio_set *bs);

/* Operations of dmsm_io_alloc. */
#define DMSM_IO_WRITE 0
#define DMSM_IO_FLUSH 1
#define DMSM_IO_DISCARD 2
#define DMSM_IO_WRITE_ZEROES 3
#define DMSM_IO_READ 4

/* memalloc_noio_save/restore: allocations of the calling task in between
 * never recurse into block I/O. */
unsigned int dmsm_noio_begin(void);
void dmsm_noio_end(unsigned int flags);

/*
 * A bio of @op at @sector for @sectors sectors (0 for a flush) with room
 * for @nr_vecs pages; when it ends, specmirror_io_done(@owner, @cookie,
 * errno) runs (any context), after the bio went back to @bs. GFP_NOIO
 * from @bs never fails for nr_vecs <= BIO_MAX_VECS; with @nowait
 * (GFP_NOWAIT, for dm's map) it may return NULL.
 */
struct bio *dmsm_io_alloc(struct bio_set *bs, struct block_device *bdev,
			  unsigned int op, bool preflush, bool fua,
			  u64 sector, u32 sectors, unsigned short nr_vecs,
			  void *owner, bool nowait);
/* Sets the cookie the completion reports. */
void dmsm_io_set_cookie(struct bio *bio, u64 cookie);
/* Frees a bio of dmsm_io_alloc that was never submitted. */
void dmsm_io_put(struct bio *bio);
/* dm_noflush_suspending(): a suspend that may requeue bios. */
bool dmsm_noflush_suspending(struct dm_target *ti);
/*
 * Adds @len bytes of @page at @off to @bio; when @bio is full, submits it
 * chained to a new bio from @bs, which it returns: keep adding to (and at
 * last submit) the returned bio.
 */
struct bio *dmsm_io_add_page(struct bio_set *bs, struct bio *bio,
			     struct page *page, unsigned int len,
			     unsigned int off);
void dmsm_io_submit(struct bio *bio);
/* Implemented in Rust (transport/sys/devio.rs). */
void specmirror_io_done(void *owner, u64 cookie, int error);

/* ZERO_PAGE(0): the kernel's shared page of zeroes. */
struct page *dmsm_zero_page(void);

/* get_random_bytes(). */
void dmsm_get_random_bytes(void *buf, size_t len);

/* Module parameter dmsm_selftest (developer only, see the docs). */
bool dmsm_selftest_enabled(void);
/* Module parameter dmsm_fault_injection (developer only). */
bool dmsm_fault_injection_enabled(void);

#endif

/*
 * Metadata I/O at table load and on (rare) metadata updates: one page read
 * or written synchronously with an on-stack bio (submit_bio_wait). A write
 * is REQ_PREFLUSH | REQ_FUA, so when it returns the block and everything
 * before it are on stable media. Process context only; may sleep.
 */
int dmsm_page_rw_sync(struct block_device *bdev, u64 sector, struct page *page, bool write);
/* bdev_nr_sectors(): the device's size in 512-byte sectors. */
/* Reads len bytes (whole sectors, at most a page) at sector into page and
 * waits (process context). */
int dmsm_range_read_sync(struct block_device *bdev, u64 sector, struct page *page, unsigned int len);
/* Flushes the device's volatile cache and waits (process context). */
int dmsm_bdev_flush(struct block_device *bdev);
u64 dmsm_bdev_nr_sectors(struct block_device *bdev);
