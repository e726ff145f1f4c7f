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
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
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
