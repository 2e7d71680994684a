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
inner='mount -t tmpfs -o "size=${FRAMEPIPE_SHM_SIZE:-1g},mode=1777" tmpfs /dev/shm &&
       mount -t tmpfs -o mode=1777 tmpfs /tmp || {
           echo "isolated.sh: cannot mount a private /tmp and /dev/shm (needs root or user namespaces)" >&2
           exit 2
       }
       exec "$@"'
if [ "$(id -u)" -eq 0 ]; then
    exec unshare --mount --propagation private sh -c "$inner" isolated.sh "$@"
else
    exec unshare --mount --map-root-user --propagation private sh -c "$inner" isolated.sh "$@"
fi
