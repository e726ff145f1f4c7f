/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What dm-specmirror needs that the 6.12 kernel crate's bindings lack.
 * bindgen runs over this with --no-recursive-allowlist, so every type it
 * emits is either allowlisted here (see Kbuild) or the kernel crate's own.
 */
#include <linux/device-mapper.h>
#include <linux/bio.h>
#include <linux/in.h>
#include "helpers.h"
