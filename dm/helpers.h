/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C shims for what Rust cannot call directly: static inline functions and
 * macros of the block and device-mapper headers. Each is a one-liner; the
 * logic lives in Rust.
 */
#ifndef DM_SPECMIRROR_HELPERS_H
#define DM_SPECMIRROR_HELPERS_H

#include <linux/types.h>

struct bio;
struct dm_target;
struct block_device;

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

#endif
