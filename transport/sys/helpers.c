// SPDX-License-Identifier: GPL-2.0
/*
 * C shims for static inline functions; see helpers.h.
 */
#include <linux/bio.h>
#include <linux/blk_types.h>
#include <linux/device-mapper.h>
#include <linux/crc32c.h>
#include <linux/irq_work.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/blkdev.h>
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/spinlock.h>
#include <linux/tcp.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "helpers.h"

void dmsm_bio_remap(struct bio *bio, struct dm_target *ti,
		    struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
	/* Empty flushes carry no sector; as dm-linear, leave them alone. */
	if (bio_sectors(bio))
		bio->bi_iter.bi_sector = dm_target_offset(ti, bio->bi_iter.bi_sector);
}

unsigned int dmsm_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

int dmsm_bio_is_preflush(const struct bio *bio)
{
	return !!(bio->bi_opf & REQ_PREFLUSH);
}

int dmsm_bio_is_fua(const struct bio *bio)
{
	return !!(bio->bi_opf & REQ_FUA);
}

unsigned int dmsm_bio_sectors(const struct bio *bio)
{
	return bio_sectors(bio);
}

unsigned int dmsm_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

unsigned long dmsm_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void dmsm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

bool dmsm_kthread_should_stop(void)
{
	return (current->flags & PF_KTHREAD) && kthread_should_stop();
}

struct net *dmsm_get_current_net(void)
{
	struct nsproxy *ns = current->nsproxy;

	return ns ? get_net(ns->net_ns) : NULL;
}

struct net *dmsm_get_net(struct net *net)
{
	return get_net(net);
}

void dmsm_put_net(struct net *net)
{
	put_net(net);
}

int dmsm_sock_create_tcp(struct net *net, int family, struct socket **res)
{
	return sock_create_kern(net, family, SOCK_STREAM, IPPROTO_TCP, res);
}

void dmsm_sock_setup_io(struct socket *sock)
{
	struct sock *sk = sock->sk;

	sk->sk_allocation = GFP_NOIO;
	sk->sk_use_task_frag = false;
	sk_set_memalloc(sk);
	tcp_sock_set_nodelay(sk);
	/*
	 * A peer that vanishes without closing (power loss, a cut link) is
	 * noticed within seconds rather than TCP's default of minutes to
	 * hours: probes after 5 s of silence, every second, 5 of them; and
	 * unacknowledged data fails the connection after 20 s.
	 */
	sock_set_keepalive(sk);
	tcp_sock_set_keepidle(sk, 5);
	tcp_sock_set_keepintvl(sk, 1);
	tcp_sock_set_keepcnt(sk, 5);
	tcp_sock_set_user_timeout(sk, 20000);
}

void dmsm_sock_set_sndtimeo(struct socket *sock, long timeout)
{
	struct sock *sk = sock->sk;

	lock_sock(sk);
	WRITE_ONCE(sk->sk_sndtimeo, timeout > 0 ? timeout : MAX_SCHEDULE_TIMEOUT);
	release_sock(sk);
}

void dmsm_sock_set_reuseaddr(struct socket *sock)
{
	sock_set_reuseaddr(sock->sk);
}

void dmsm_sock_set_abortive_close(struct socket *sock)
{
	sock_no_linger(sock->sk);
}

void dmsm_sock_release(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (sk && sock_flag(sk, SOCK_MEMALLOC)) {
		lock_sock(sk);
		sk_clear_memalloc(sk);
		release_sock(sk);
	}
	sock_release(sock);
}

void dmsm_memalloc_socks_get(void)
{
	static_branch_inc(&memalloc_socks_key);
}

void dmsm_memalloc_socks_put(void)
{
	static_branch_dec(&memalloc_socks_key);
}

void *dmsm_page_address(struct page *page)
{
	return page_address(page);
}

u32 dmsm_crc32c(u32 crc, const void *data, size_t len)
{
	u32 c = crc;

	/* crc32c() takes an unsigned int length: feed it in pieces. */
	while (len > UINT_MAX) {
		c = crc32c(c, data, UINT_MAX);
		data += UINT_MAX;
		len -= UINT_MAX;
	}
	return crc32c(c, data, len);
}

struct dmsm_irq_call {
	struct irq_work work;
	void (*fn)(void *arg);
	void *arg;
};

static void dmsm_irq_call_fn(struct irq_work *work)
{
	struct dmsm_irq_call *c = container_of(work, struct dmsm_irq_call, work);

	c->fn(c->arg);
}

void dmsm_call_in_hardirq(void (*fn)(void *arg), void *arg)
{
	struct dmsm_irq_call c = {
		.work = IRQ_WORK_INIT_HARD(dmsm_irq_call_fn),
		.fn = fn,
		.arg = arg,
	};

	irq_work_queue(&c.work);
	irq_work_sync(&c.work);
}


void *dmsm_per_bio_data(struct bio *bio, size_t size)
{
	return dm_per_bio_data(bio, size);
}

int dmsm_bio_copy_data(struct bio *bio,
		       int (*cb)(void *ctx, const void *data, unsigned int len),
		       void *ctx)
{
	struct bio_vec bv;
	struct bvec_iter iter;
	int r = 0;

	bio_for_each_segment(bv, bio, iter) {
		void *p = bvec_kmap_local(&bv);

		r = cb(ctx, p, bv.bv_len);
		kunmap_local(p);
		if (r)
			break;
	}
	return r;
}

void dmsm_bio_endio(struct bio *bio, u8 status)
{
	bio->bi_status = status;
	bio_endio(bio);
}

void dmsm_bio_submit_remapped(struct bio *bio, struct dm_target *ti,
			      struct block_device *bdev)
{
	dmsm_bio_remap(bio, ti, bdev);
	dm_submit_bio_remap(bio, NULL);
}

void dmsm_limit_abnormal_io(struct queue_limits *limits, unsigned int max)
{
	limits->max_hw_discard_sectors = min(limits->max_hw_discard_sectors, max);
	limits->max_write_zeroes_sectors = min(limits->max_write_zeroes_sectors, max);
}

/* What travels with each bio the target role builds. */
struct dmsm_io {
	void *owner;
	u64 cookie;
	struct bio bio;
};

struct bio_set *dmsm_bioset_create(unsigned int pool_size)
{
	struct bio_set *bs = kzalloc(sizeof(*bs), GFP_KERNEL);

	if (!bs)
		return NULL;
	if (bioset_init(bs, pool_size, offsetof(struct dmsm_io, bio), BIOSET_NEED_BVECS)) {
		kfree(bs);
		return NULL;
	}
	return bs;
}

void dmsm_bioset_destroy(struct bio_set *bs)
{
	if (!bs)
		return;
	bioset_exit(bs);
	kfree(bs);
}

static void dmsm_io_endio(struct bio *bio)
{
	struct dmsm_io *io = container_of(bio, struct dmsm_io, bio);
	int err = blk_status_to_errno(bio->bi_status);
	void *owner = io->owner;
	u64 cookie = io->cookie;

	/* Back to the bio_set first: the owner may be freed once told. */
	bio_put(bio);
	specmirror_io_done(owner, cookie, err);
}

unsigned int dmsm_noio_begin(void)
{
	return memalloc_noio_save();
}

void dmsm_noio_end(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

struct bio *dmsm_io_alloc(struct bio_set *bs, struct block_device *bdev,
			  unsigned int op, bool preflush, bool fua,
			  u64 sector, u32 sectors, unsigned short nr_vecs,
			  void *owner, bool nowait)
{
	blk_opf_t opf;
	struct bio *bio;
	struct dmsm_io *io;

	switch (op) {
	case DMSM_IO_FLUSH:
		opf = REQ_OP_WRITE | REQ_PREFLUSH;
		break;
	case DMSM_IO_DISCARD:
		opf = REQ_OP_DISCARD;
		break;
	case DMSM_IO_WRITE_ZEROES:
		opf = REQ_OP_WRITE_ZEROES;
		break;
	case DMSM_IO_READ:
		opf = REQ_OP_READ;
		break;
	default:
		opf = REQ_OP_WRITE | REQ_SYNC;
		break;
	}
	if (preflush)
		opf |= REQ_PREFLUSH;
	if (fua)
		opf |= REQ_FUA;
	bio = bio_alloc_bioset(bdev, nr_vecs, opf, nowait ? GFP_NOWAIT : GFP_NOIO, bs);
	if (!bio)
		return NULL;
	io = container_of(bio, struct dmsm_io, bio);
	io->owner = owner;
	io->cookie = 0;
	bio->bi_iter.bi_sector = sector;
	if (op == DMSM_IO_DISCARD || op == DMSM_IO_WRITE_ZEROES)
		bio->bi_iter.bi_size = sectors << SECTOR_SHIFT;
	bio->bi_end_io = dmsm_io_endio;
	return bio;
}

struct bio *dmsm_io_add_page(struct bio_set *bs, struct bio *bio,
			     struct page *page, unsigned int len,
			     unsigned int off)
{
	struct dmsm_io *io = container_of(bio, struct dmsm_io, bio);
	struct dmsm_io *nio;
	struct bio *next;

	if (bio_add_page(bio, page, len, off) == len)
		return bio;
	/*
	 * Full (a payload over BIO_MAX_VECS pages): go on in a new bio that
	 * takes over the completion, chain the full one to it and submit it,
	 * as blk_next_bio() does.
	 */
	next = bio_alloc_bioset(bio->bi_bdev, BIO_MAX_VECS,
				bio->bi_opf & ~REQ_PREFLUSH, GFP_NOIO, bs);
	nio = container_of(next, struct dmsm_io, bio);
	nio->owner = io->owner;
	nio->cookie = io->cookie;
	next->bi_iter.bi_sector = bio_end_sector(bio);
	next->bi_end_io = dmsm_io_endio;
	/* bio_chain() wants a bio without a completion of its own. */
	bio->bi_end_io = NULL;
	bio_chain(bio, next);
	submit_bio(bio);
	if (bio_add_page(next, page, len, off) != len) {
		/* A single page always fits an empty bio. */
		next->bi_status = BLK_STS_IOERR;
	}
	return next;
}

void dmsm_io_set_cookie(struct bio *bio, u64 cookie)
{
	container_of(bio, struct dmsm_io, bio)->cookie = cookie;
}

void dmsm_io_put(struct bio *bio)
{
	bio_put(bio);
}

void dmsm_io_submit(struct bio *bio)
{
	submit_bio(bio);
}

bool dmsm_noflush_suspending(struct dm_target *ti)
{
	return dm_noflush_suspending(ti);
}

struct page *dmsm_zero_page(void)
{
	return ZERO_PAGE(0);
}

void dmsm_get_random_bytes(void *buf, size_t len)
{
	get_random_bytes(buf, len);
}

/*
 * Developer only (Documentation/dm-specmirror.rst, "Developer options"):
 * module init runs a smoke test of the kernel glue and fails if it fails.
 */
static bool dmsm_selftest;
module_param(dmsm_selftest, bool, 0);
MODULE_PARM_DESC(dmsm_selftest, "Developer only: run the kernel glue self-test at load");

bool dmsm_selftest_enabled(void)
{
	return dmsm_selftest;
}

/*
 * Developer only: enables the fault-injection messages (corrupt, drop);
 * off by default so that production devices never accept them.
 */
static bool dmsm_fault_injection;
module_param(dmsm_fault_injection, bool, 0444);
MODULE_PARM_DESC(dmsm_fault_injection, "Developer only: allow fault-injection messages (corrupt, drop)");

bool dmsm_fault_injection_enabled(void)
{
	return dmsm_fault_injection;
}

int dmsm_page_rw_sync(struct block_device *bdev, u64 sector, struct page *page, bool write)
{
	struct bio_vec bvec;
	struct bio bio;
	blk_opf_t opf = write ? (REQ_OP_WRITE | REQ_SYNC | REQ_PREFLUSH | REQ_FUA) : REQ_OP_READ;
	int ret;

	bio_init(&bio, bdev, &bvec, 1, opf);
	bio.bi_iter.bi_sector = sector;
	__bio_add_page(&bio, page, PAGE_SIZE, 0);
	ret = submit_bio_wait(&bio);
	bio_uninit(&bio);
	return ret;
}

int dmsm_range_read_sync(struct block_device *bdev, u64 sector, struct page *page, unsigned int len)
{
	struct bio_vec bvec;
	struct bio bio;
	int ret;

	if (!len || len > PAGE_SIZE || len % SECTOR_SIZE)
		return -EINVAL;
	bio_init(&bio, bdev, &bvec, 1, REQ_OP_READ);
	bio.bi_iter.bi_sector = sector;
	__bio_add_page(&bio, page, len, 0);
	ret = submit_bio_wait(&bio);
	bio_uninit(&bio);
	return ret;
}

int dmsm_bdev_flush(struct block_device *bdev)
{
	return blkdev_issue_flush(bdev);
}

u64 dmsm_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}
