#!/bin/sh
# One steel container for the process kubelet. Run as
#   unshare --pid --fork --kill-child --mount-proc --mount --propagation private -- \
#     sh steel-container.sh ROOT UID GID START_SH STEEL_DIR PORT STATE_DIR
# Inside fresh PID and mount namespaces it gives steel a root of its own: the host's directories bound
# in, its own /tmp, plus an empty /files as steel's image has (steel keeps sessions' files there under
# NODE_ENV=production and creates it at start), pivoted into, then starts steel with the peer's
# start.sh as UID:GID.
# This shell is the namespace's init and lives exactly as long as steel: when steel ends, or this
# shell is killed, the kernel ends every process left in the namespace (steel's Chromium, which runs
# in a process group of its own, included). SIGTERM asks steel to stop (SIGINT: SIGTERM only restarts
# its browser).
set -eu
# pivot_root lives in sbin, which a PATH for an unprivileged process may lack.
export PATH="$PATH:/usr/sbin:/sbin"
root=$1 uid=$2 gid=$3 start=$4 dir=$5 port=$6 state=$7
mount -t tmpfs -o mode=0755 bso-root "$root"
parent=$(echo "$root" | cut -d/ -f2)
for entry in /*; do
  name=${entry#/}
  if [ -L "$entry" ]; then
    cp -P "$entry" "$root/$name"
  elif [ -d "$entry" ]; then
    mkdir "$root/$name"
    # The folder holding the new root is bound alone: bound recursively it would hold the root itself.
    if [ "$name" = "$parent" ]; then mount --bind "$entry" "$root/$name"; else mount --rbind "$entry" "$root/$name"; fi
  fi
done
mkdir -p "$root/files"
mount -t tmpfs -o "mode=0700,uid=$uid,gid=$gid" bso-files "$root/files"
# A /tmp of its own, as the pod's emptyDir gives it (Chromium keeps its singleton socket folder there,
# and a killed browser would leave it in the host's /tmp), with steel's HOME (which lives under the
# host's /tmp) bound back in at the same path.
mount -t tmpfs -o mode=1777 bso-tmp "$root/tmp"
mkdir -p "$root$HOME"
mount --bind "$HOME" "$root$HOME"
# pivot_root, not chroot: the kernel refuses a chrooted process a user namespace, which Chromium's sandbox needs.
mkdir "$root/.host"
cd "$root"
pivot_root . .host
umount -l /.host
rmdir /.host
cd /
pid=$(setpriv --reuid="$uid" --regid="$gid" --clear-groups bash "$start" "$dir" "$port" "$state")
trap 'kill -INT "$pid" 2>/dev/null || true' TERM INT
# steel is this init's child once start.sh is gone: ended, it stays a zombie until reaped, so read its state.
alive() { [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; }
while alive; do
  sleep 0.2 &
  wait $! || true
done
exit 1
