#!/bin/bash
# In the guest, before Python starts: make the directories Python imports from
# go through a page cache (mfinject/vm/shares.py says why and what it saves).
#
#   cache-imports.sh STAGING PLAN
#
# STAGING is the host's second share of its root (vng --rodir), mounted by
# virtme-ng without caching; PLAN names the directories to cache, one a line.
# The share is mounted again with cache=loose and each directory bound over
# its own path from it. A directory that is a mount point already, or has one
# below it, is left uncached: a bind over it would hide that mount. Any
# failure leaves that directory as it was: speed is not worth a wrong run.
# Says what it did, a line each, on standard output.
#
# It is a shell script, not Python, so that the interpreter itself already
# starts from the cached share: the guest's first Python used to take 3 s.
# MFINJECT_MOUNTS, MFINJECT_MOUNT and MFINJECT_UMOUNT stand in for
# /proc/self/mounts, mount and umount in the unit tests.
set -u
staging=$1
plan=$2
table=${MFINJECT_MOUNTS:-/proc/self/mounts}
mount=${MFINJECT_MOUNT:-mount}
umount=${MFINJECT_UMOUNT:-umount}
opts=ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose

source=
points=()
while read -r src at _; do
    # the kernel escapes a space, tab, newline and backslash in a mount point as \ooo
    printf -v at '%b' "${at//\\/\\0}"
    points+=("$at")
    if [[ -z $source && $at == "$staging" ]]; then
        source=$src
    fi
done < "$table"

if [[ -z $source ]]; then
    echo "nothing cached: no share at $staging"
    exit 0
fi
# each mount with a time limit: the share is served by QEMU, the mounts by
# the kernel under test
if ! said=$(timeout 30 "$umount" "$staging" 2>&1); then
    echo "nothing cached: umount $staging: $said"
    exit 0
fi
if ! said=$(timeout 30 "$mount" -t 9p -o "$opts" "$source" "$staging" 2>&1); then
    echo "nothing cached: mount -t 9p -o $opts $source $staging: $said"
    exit 0
fi
while IFS= read -r dir || [[ -n $dir ]]; do
    [[ -n $dir ]] || continue
    below=
    for at in "${points[@]}"; do
        if [[ $at == "$dir" || $at == "${dir%/}"/* ]]; then
            below=$at
            break
        fi
    done
    if [[ -n $below ]]; then
        echo "$dir: not cached (a mount at $below would be hidden)"
    elif said=$(timeout 30 "$mount" --bind "$staging$dir" "$dir" 2>&1); then
        echo "$dir: cached (9p cache=loose, $source)"
    else
        echo "$dir: not cached (mount --bind $staging$dir $dir: $said)"
    fi
done < "$plan"
