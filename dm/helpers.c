// SPDX-License-Identifier: GPL-2.0
/*
 * C shims for static inline functions; see helpers.h.
 */
#include <linux/bio.h>
#include <linux/blk_types.h>
#include <linux/device-mapper.h>

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
