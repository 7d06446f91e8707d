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
# /proc/self/mounts, mount and umount in the unit tests (all three given).
set -u
staging=$1
plan=$2
table=${MFINJECT_MOUNTS:-/proc/self/mounts}
# busybox's mount when there is one (virtme-ng needs it on the host anyway): a
# static binary, 40 ms a mount under TCG where util-linux's takes 100 ms
# (its timeout too: each mount has a time limit, the share being served by QEMU
# and mounted by the kernel under test)
if [[ -n ${MFINJECT_MOUNT:-} ]]; then
    mount=(timeout 30 "$MFINJECT_MOUNT") umount=(timeout 30 "${MFINJECT_UMOUNT:-umount}")
elif busybox=$(command -v busybox); then
    mount=("$busybox" timeout 30 "$busybox" mount) umount=("$busybox" timeout 30 "$busybox" umount)
else
    mount=(timeout 30 mount) umount=(timeout 30 umount)
fi
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
if ! said=$("${umount[@]}" "$staging" 2>&1); then
    echo "nothing cached: umount $staging: $said"
    exit 0
fi
if ! said=$("${mount[@]}" -t 9p -o "$opts" "$source" "$staging" 2>&1); then
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
    elif said=$("${mount[@]}" --bind "$staging$dir" "$dir" 2>&1); then
        echo "$dir: cached (9p cache=loose, $source)"
    else
        echo "$dir: not cached (mount --bind $staging$dir $dir: $said)"
    fi
done < "$plan"
