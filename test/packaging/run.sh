#!/bin/sh
# SPDX-License-Identifier: MIT
# Packaging checks (tools/check-all runs this from its build directory, as
# root on Debian 12): builds the .deb once (nocheck) and the .rpm from the
# same `make dist` tarball, runs lintian, installs the .deb, checks the
# installed binaries, unit (systemd-analyze verify and security), group and
# module SDK, compares the rpm's file list with the deb's, removes the
# package; validates the DaemonSet against the Kubernetes schema; runs the
# --proc-root namespace test. Each check is one ":test-result:" line in
# test/packaging/packaging.trs (counted by test/summary.py), with its time.
set -u
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=$(pwd)
out=$builddir/test/packaging
mkdir -p "$out"
trs=$out/packaging.trs
: >"$trs"
fails=0
t0=$(date +%s)

result() {	# result NAME STATUS(0 pass, 77 skip, else fail) [message]
	now=$(date +%s)
	case $1 in *) ;; esac
	if [ "$2" = 0 ]; then
		echo ":test-result: PASS $1" >>"$trs"; echo "packaging: PASS $1 ($((now - t0)) s)"
	elif [ "$2" = 77 ]; then
		echo ":test-result: SKIP $1" >>"$trs"; echo "packaging: SKIP $1: ${3:-}"
	else
		echo ":test-result: FAIL $1" >>"$trs"; echo "packaging: FAIL $1 ${3:-}"
		fails=$((fails + 1))
	fi
	t0=$now
}

run_check() {	# run_check NAME COMMAND...: output in $out/NAME.log
	name=$1; shift
	if "$@" >"$out/$name.log" 2>&1; then
		result "$name" 0
	else
		rc=$?
		if [ $rc = 77 ]; then
			result "$name" 77 "$(tail -n 1 "$out/$name.log")"
		else
			result "$name" 1 "(exit $rc; last lines of $out/$name.log:)"
			tail -n 30 "$out/$name.log"
		fi
	fi
}

[ "$(id -u)" = 0 ] || { echo "packaging: needs root (dpkg -i)"; result root 77 "not root"; exit 0; }

# --- build ------------------------------------------------------------------
run_check deb-build make deb DEB_BUILD_OPTIONS="nocheck parallel=2"
debs=$(ls "$builddir"/packages/deb/*.deb 2>/dev/null | grep -v -- -dbgsym_)
deb_main=$(ls "$builddir"/packages/deb/hostdevd_*.deb 2>/dev/null | head -n 1)
deb_dev=$(ls "$builddir"/packages/deb/hostdevd-dev_*.deb 2>/dev/null | head -n 1)
# shellcheck disable=SC2086
run_check lintian sh -c 'test $# -gt 0 && lintian --fail-on error --allow-root "$@"' lintian $debs
run_check rpm-build make rpm
rpms=$(ls "$builddir"/packages/rpm/RPMS/*/*.rpm 2>/dev/null)

# --- install the .deb and check what it put there ---------------------------
installed() {
	[ -n "$deb_main" ] && [ -n "$deb_dev" ] || { echo "no .deb built"; return 1; }
	dpkg -i "$deb_main" "$deb_dev" || return 1
	/usr/sbin/hostdevd --version | grep -E '^hostdevd [0-9]+\.[0-9]+\.[0-9]+ ' || return 1
	/usr/bin/hostdevctl --version | grep -E '^hostdevctl [0-9]' || return 1
	getent group hostdevd || { echo "no hostdevd group"; return 1; }
	moddir=$(dirname "$(dpkg -L hostdevd | grep '/modules/pci.so$')")
	[ -f "$moddir/pci.so" ] && [ -f "$moddir/usb.so" ] || return 1
	if ls "$moddir"/*.la 2>/dev/null; then echo ".la files in $moddir"; return 1; fi
	# From the package's contents: a minimal image may exclude /usr/share/man.
	for m in man8/hostdevd.8.gz man8/hostdevctl.8.gz man5/hostdevd.conf.5.gz; do
		dpkg-deb -c "$deb_main" | grep -q "/usr/share/man/$m\$" || { echo "no $m"; return 1; }
	done
	test -f /lib/udev/rules.d/60-hostdevd.rules && test -f /usr/lib/tmpfiles.d/hostdevd.conf &&
		test -f /usr/share/bash-completion/completions/hostdevctl || return 1
	# The installed unit names the installed binary.
	grep -q '^ExecStart=/usr/sbin/hostdevd$' /lib/systemd/system/hostdevd.service || return 1
}
run_check deb-install installed
unit=/lib/systemd/system/hostdevd.service
# --man=no: a minimal image may exclude the man pages (checked in the package above).
run_check systemd-verify sh -c "test -f $unit && systemd-analyze verify --man=no $unit"
run_check systemd-security sh -c \
	"test -f $unit && systemd-analyze security --offline=yes --threshold=40 $unit | tail -n 1"
sdk() {
	d=$(mktemp -d)
	cat >"$d/m.c" <<'EOM'
#include <hostdevd/module.h>
__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER, .name = "sdk-test",
};
EOM
	# shellcheck disable=SC2046
	cc -shared -fPIC -o "$d/m.so" "$d/m.c" $(pkg-config --cflags hostdevd) &&
		pkg-config --modversion hostdevd && nm -D "$d/m.so" | grep -q ' hostdevd_module$'
	rc=$?
	rm -rf "$d"
	return $rc
}
run_check module-sdk sdk

# --- the rpm holds what the deb holds ---------------------------------------
normalize() {	# paths of regular files, distribution directories mapped
	sed -e 's|^\./|/|' -e 's|^/lib/|/usr/lib/|' -e 's|/usr/lib/[a-z0-9_]*-linux-gnu/|/usr/LIB/|' \
		-e 's|^/usr/lib64/|/usr/LIB/|' -e 's|\.gz$||' |
		grep -v -e '^/usr/share/doc/' -e '^/usr/share/licenses/' -e '^/usr/lib/debug' \
			-e '^/usr/lib/\.build-id' -e '/$' | sort -u
}
compare() {
	[ -n "$rpms" ] && [ -n "$debs" ] || { echo "packages missing"; return 1; }
	for f in $debs; do dpkg-deb --fsys-tarfile "$f" | tar -t; done | normalize >"$out/deb.files"
	for f in $rpms; do rpm -qlp "$f"; done | normalize >"$out/rpm.files"
	# Directories dpkg lists as paths of their own: keep what rpm lists too.
	grep -vxF -f "$out/rpm.files" "$out/deb.files" | while read -r p; do
		grep -q "^$p/" "$out/deb.files" || echo "$p"
	done >"$out/only-deb"
	grep -vxF -f "$out/deb.files" "$out/rpm.files" | while read -r p; do
		grep -q "^$p/" "$out/rpm.files" || echo "$p"
	done >"$out/only-rpm"
	echo "deb: $(wc -l <"$out/deb.files") paths, rpm: $(wc -l <"$out/rpm.files") paths"
	echo "only in the deb:"; cat "$out/only-deb"
	echo "only in the rpm:"; cat "$out/only-rpm"
	[ ! -s "$out/only-deb" ] && [ ! -s "$out/only-rpm" ]
}
run_check rpm-vs-deb compare

removed() {
	dpkg -s hostdevd >/dev/null || { echo "hostdevd is not installed"; return 1; }
	dpkg --purge hostdevd-dev hostdevd || return 1
	! test -e /usr/sbin/hostdevd && ! test -e /lib/systemd/system/hostdevd.service
}
run_check deb-remove removed

# --- README command 1, then the start of command 2 ----------------------------
run_check readme-commands sh "$srcdir/test/packaging/readme-commands.sh"

# --- the DaemonSet and KubeVirt's side ---------------------------------------
yaml_to_json() {
	/usr/bin/python3 -c 'import json, sys, yaml
json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)' "$1"
}
daemonset() {
	ds=$srcdir/etc/hostdevd-daemonset.yaml
	yaml_to_json "$ds" >"$out/daemonset.json" || return 1
	node "$srcdir/test/packaging/validate-k8s.js" "$out/daemonset.json" || return 1
	# What the code needs from the host is there (README "DaemonSet").
	/usr/bin/python3 - "$out/daemonset.json" <<'EOP'
import json, sys
docs = json.load(open(sys.argv[1]))
ds = next(d for d in docs if d["kind"] == "DaemonSet")
sa = next(d for d in docs if d["kind"] == "ServiceAccount")
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
vols = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
host = {p: vols[n] for p, n in mounts.items()}
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)
need(pod.get("hostPID") is True, "hostPID")
need(pod.get("hostNetwork") is True, "hostNetwork")
need(c["securityContext"].get("privileged") is True, "privileged")
need(pod.get("priorityClassName") == "system-node-critical", "system-node-critical")
need(pod.get("serviceAccountName") == sa["metadata"]["name"], "serviceAccount")
need(any(t.get("operator") == "Exists" for t in pod.get("tolerations", [])), "tolerations")
need("requests" in c.get("resources", {}) and "limits" in c["resources"], "resources")
for p in ("/sys", "/dev", "/run/udev", "/lib/modules", "/var/lib/kubelet/device-plugins",
          "/var/lib/hostdevd"):
    need(host.get(p) == p, f"hostPath mount {p}")
args = c["command"]
proc = [a.split("=", 1)[1] for a in args if a.startswith("--proc-root=")]
need(proc and host.get(proc[0]) == "/proc", "--proc-root on the host's /proc")
port = [a.rsplit(":", 1)[1] for a in args if a.startswith("--metrics-address=")]
need(port, "--metrics-address")
ports = {p["name"]: str(p["containerPort"]) for p in c.get("ports", [])}
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    g = c.get(probe, {}).get("httpGet", {})
    need(g.get("path") == path and port and ports.get(g.get("port")) == port[0], probe)
print("missing:", problems) if problems else print("DaemonSet: everything the code needs is there")
sys.exit(1 if problems else 0)
EOP
}
run_check daemonset daemonset
kubevirt() {
	yaml_to_json "$srcdir/etc/kubevirt-permitted-host-devices.yaml" >"$out/kubevirt.json" &&
		node "$srcdir/test/packaging/validate-k8s.js" --kubevirt "$out/kubevirt.json"
}
run_check kubevirt-snippet kubevirt

echo "packaging: $fails failed"
[ $fails = 0 ]
