#!/bin/sh
# tests/transport/isolated.sh COMMAND [ARG...]: runs COMMAND in a mount namespace of its own, with
# a private /tmp and /dev/shm (fresh tmpfs mounts).
#
# Why: iceoryx 2.0 fixes RouDi's names at build time (the socket /tmp/roudi, the lock
# /tmp/iox-unique-roudi.lock, the shared memory /dev/shm/iceoryx_mgmt and /dev/shm/<user>), so two
# RouDi on one machine collide: two tests run in parallel by ctest, or another user's RouDi. In
# here every name is private: the test starts (and stops) a RouDi of its own, with its own config,
# and nothing outside sees it or is seen. Root uses a plain mount namespace; another user a user
# namespace mapped to root (kernel.unprivileged_userns_clone must allow it).
#
# FRAMEPIPE_SHM_SIZE sets the size of the private /dev/shm (default 1g; tmpfs takes memory only
# for what is written).
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: isolated.sh COMMAND [ARG...]" >&2
    exit 2
fi
# The private /tmp hides the host's: a checkout or build directory below /tmp (a fresh clone in
# /tmp/x) would vanish with it. So the host's /tmp stays reachable at /dev/shm/.host-tmp, and the
# top-level directory of /tmp that holds the working directory, this script (the source tree),
# or any absolute path among the arguments (the test binary, the build tree) is bound back into
# the private /tmp at its own path.
inner='mount -t tmpfs -o "size=${FRAMEPIPE_SHM_SIZE:-1g},mode=1777" tmpfs /dev/shm &&
       mkdir /dev/shm/.host-tmp && mount --rbind /tmp /dev/shm/.host-tmp &&
       mount -t tmpfs -o mode=1777 tmpfs /tmp || {
           echo "isolated.sh: cannot mount a private /tmp and /dev/shm (needs root or user namespaces)" >&2
           exit 2
       }
       for p in "$PWD" "$FRAMEPIPE_ISOLATED_SELF" "$@"; do
           case "$p" in
           /tmp/?*)
               top=${p#/tmp/}
               top=${top%%/*}
               if [ ! -e "/tmp/$top" ] && [ -d "/dev/shm/.host-tmp/$top" ]; then
                   mkdir "/tmp/$top" && mount --rbind "/dev/shm/.host-tmp/$top" "/tmp/$top"
               fi
               ;;
           esac
       done
       exec "$@"'
FRAMEPIPE_ISOLATED_SELF="$(cd "$(dirname "$0")" && pwd)"
export FRAMEPIPE_ISOLATED_SELF
if [ "$(id -u)" -eq 0 ]; then
    exec unshare --mount --propagation private sh -c "$inner" isolated.sh "$@"
else
    exec unshare --mount --map-root-user --propagation private sh -c "$inner" isolated.sh "$@"
fi
