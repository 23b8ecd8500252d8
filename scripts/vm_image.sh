#!/usr/bin/env bash
# Build the small Debian image the `qemu` provider boots: the real cloud-init and
# python3 on a plain Debian, so the VM test runs the same user-data a cloud gets.
#
# No loop mounts: debootstrap fills a directory, `mkfs.ext4 -d` turns it into a
# filesystem image, and the kernel + initrd are copied out for qemu's -kernel/-initrd.
# The result is cached under a directory named by a hash of this recipe, so a
# second run is instant and a changed recipe never reuses a stale image.
#
# Environment:
#   INLETSCTL_VM_DIR   where images are cached (default: the user cache dir)
#   DEBIAN_MIRROR      Debian mirror (default: the one apt is configured with)
#   DEBIAN_SUITE       default bookworm
set -euo pipefail

SUITE=${DEBIAN_SUITE:-bookworm}
VM_DIR=${INLETSCTL_VM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inletsctl/vm}
IMAGE_SIZE=2G
# caddy: the HTTPS user-data installs it from the distro, which the offline guest cannot
# reach; it is preinstalled (and disabled) so that step finds it, as apt would.
PACKAGES=python3-cffi-backend,systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,cloud-init,python3,curl,ca-certificates,iproute2,netbase,sudo,caddy,openssh-server
HOST_PACKAGES="debootstrap qemu-system-x86 qemu-utils e2fsprogs dosfstools mtools"

log() { printf 'vm-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The mirror apt already uses is the one this machine can reach.
apt_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

install_host_packages() {
  local missing="" p
  for p in $HOST_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing Debian packages:$missing (install them, or run as root)"
  fi
  log "installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}
# debootstrap does not resolve virtual packages, so python3-cffi-backend (which
# provides what python3-cryptography needs) is named explicitly.
# Everything that shapes the image goes into the key; the mirror does not (same bytes).
RECIPE_HASH=$( { cat "$0"; printf '%s\n' "$SUITE" "$PACKAGES" "$IMAGE_SIZE"; } | sha256sum | cut -c1-16)
OUT="$VM_DIR/$RECIPE_HASH"

if [ -f "$OUT/image.qcow2" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  ln -sfn "$RECIPE_HASH" "$VM_DIR/current"
  log "cached: $OUT"
  printf '%s\n' "$OUT"
  exit 0
fi

install_host_packages
[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root once, the image is then cached in $VM_DIR"

start=$(date +%s)
mkdir -p "$VM_DIR"
# Stage 1 (slow, network): debootstrap, kept by its own key until the image is
# made, so a failure in a later step does not download everything again.
STAGE_HASH=$(printf '%s\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-16)
ROOT="$VM_DIR/rootfs-$STAGE_HASH"
WORK=$(mktemp -d "$VM_DIR/build.XXXXXX")
unmount_root() {
  # debootstrap mounts /proc and /sys inside the tree; never delete through a mount.
  local m
  for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi
  done
}
cleanup() {
  unmount_root
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

if [ ! -f "$ROOT.done" ]; then
  rm -rf --one-file-system "$ROOT"
  log "debootstrap $SUITE from $MIRROR"
  mkdir -p "$VM_DIR/debs"
  if ! debootstrap --variant=minbase --cache-dir="$VM_DIR/debs" --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1; then
    cat "$WORK/debootstrap.log" "$ROOT/debootstrap/debootstrap.log" >"$VM_DIR/last-failure.log" 2>/dev/null || true
    tail -n 30 "$VM_DIR/last-failure.log" >&2
    die "debootstrap failed; full log in $VM_DIR/last-failure.log"
  fi
  unmount_root
  touch "$ROOT.done"
fi

log "configuring"
# Configure a copy, so the cached stage stays pristine whatever the recipe does next.
cp -a "$ROOT" "$WORK/root"
ROOT="$WORK/root"
echo exit-server >"$ROOT/etc/hostname"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' >"$ROOT/etc/fstab"
# The guest only ever talks to qemu's user-mode network: one NIC, DHCP.
cat >"$ROOT/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
ln -sf /lib/systemd/system/systemd-networkd.service "$ROOT/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$ROOT/etc/systemd/system/network-online.target.wants"
ln -sf /lib/systemd/system/systemd-networkd-wait-online.service \
  "$ROOT/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"
# Only the NoCloud seed exists here; probing cloud metadata services would stall the boot.
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-inletsctl-vm.cfg" <<'EOF'
datasource_list: [NoCloud, None]
network:
  config: disabled
# No locales package here: generating one fails and marks the whole boot as an error.
locale: false
EOF
# Caddy starts only when the user-data asks for it, as where apt installs it at boot.
rm -f "$ROOT"/etc/systemd/system/multi-user.target.wants/caddy.service
# sshd is the `ssh` provider's way in (reached only through a hostfwd that asks for it).
# No host key is baked in, or every VM would share it: cloud-init makes each VM its own
# (ed25519 only: quick even under TCG), or installs the user-data's `ssh_keys`.
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat >"$ROOT/etc/cloud/cloud.cfg.d/91-inletsctl-vm-ssh.cfg" <<'EOF'
ssh_genkeytypes: [ed25519]
EOF
# Nothing on the VM should wake up and reach for the network on its own.
rm -f "$ROOT"/etc/systemd/system/timers.target.wants/apt-daily*.timer
# Boot markers on the serial console let the provider report progress and tell a
# finished-but-failed boot (cloud-init error) from one still running.
cat >"$ROOT/usr/local/sbin/inletsctl-boot-marker" <<'EOF'
#!/bin/sh
result=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')
echo "INLETSCTL-BOOT: cloud-init ${result:-unknown}" >/dev/ttyS0
EOF
chmod 0755 "$ROOT/usr/local/sbin/inletsctl-boot-marker"
cat >"$ROOT/etc/systemd/system/inletsctl-boot-marker.service" <<'EOF'
[Unit]
Description=Report cloud-init's result on the serial console
After=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/inletsctl-boot-marker

[Install]
WantedBy=cloud-init.target
EOF
mkdir -p "$ROOT/etc/systemd/system/cloud-init.target.wants"
ln -sf /etc/systemd/system/inletsctl-boot-marker.service \
  "$ROOT/etc/systemd/system/cloud-init.target.wants/inletsctl-boot-marker.service"
passwd -R "$ROOT" -l root >/dev/null
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin

# A kernel that can find its root disk: the initrd must carry virtio_blk.
kernel=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -n1)
chroot "$ROOT" lsinitramfs "/boot/${initrd##*/}" >"$WORK/initrd.list"
grep -q 'virtio_blk' "$WORK/initrd.list" || die "initrd has no virtio_blk module"

unmount_root
log "making ext4 image ($IMAGE_SIZE)"
mkfs.ext4 -q -F -L root -d "$ROOT" "$WORK/image.raw" "$IMAGE_SIZE"
qemu-img convert -f raw -O qcow2 "$WORK/image.raw" "$WORK/image.qcow2"
mkdir -p "$WORK/out"
mv "$WORK/image.qcow2" "$WORK/out/image.qcow2"
cp "$kernel" "$WORK/out/vmlinuz"
cp "$initrd" "$WORK/out/initrd.img"
chmod 0644 "$WORK/out"/*
printf 'suite=%s\nmirror=%s\nbuilt=%s\nseconds=%s\n' "$SUITE" "$MIRROR" "$(date -u +%FT%TZ)" "$(($(date +%s) - start))" \
  >"$WORK/out/recipe.txt"
rm -rf "$OUT"
mv "$WORK/out" "$OUT"
ln -sfn "$RECIPE_HASH" "$VM_DIR/current"
log "built $OUT in $(($(date +%s) - start))s"
printf '%s\n' "$OUT"
