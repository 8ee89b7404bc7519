// SPDX-License-Identifier: MIT
// Validates Kubernetes manifests offline against the Kubernetes OpenAPI schema
// (npm's kubernetes-models 4.x, installed by tools/install-deps under
// /usr/local/lib/hostdevd-test). Input: a JSON array of documents (the YAML
// converted by run.sh). --kubevirt: checks KubeVirt's permittedHostDevices
// instead (each entry has a resourceName and externalResourceProvider: true).
// Exits 0 when every document is valid, 1 with the errors otherwise.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const kubevirt = args[0] === "--kubevirt";
const docs = JSON.parse(readFileSync(kubevirt ? args[1] : args[0], "utf8"));
let failed = 0;

function fail(what, err) {
	console.log(`INVALID ${what}: ${err && err.message ? err.message : err}`);
	if (err && err.errors) console.log(JSON.stringify(err.errors, null, 1));
	failed++;
}

if (kubevirt) {
	for (const d of docs) {
		const p = d?.spec?.configuration?.permittedHostDevices;
		if (d.kind !== "KubeVirt" || !p) { fail(d.kind, "no spec.configuration.permittedHostDevices"); continue; }
		let n = 0;
		for (const kind of ["pciHostDevices", "mediatedDevices", "usb"]) {
			for (const e of p[kind] || []) {
				n++;
				if (typeof e.resourceName !== "string" || !/^[a-z0-9.-]+\/[A-Za-z0-9_.-]+$/.test(e.resourceName))
					fail(kind, `bad resourceName ${e.resourceName}`);
				if (e.externalResourceProvider !== true)
					fail(kind, `${e.resourceName}: externalResourceProvider must be true`);
				if (kind === "pciHostDevices" && !/^[0-9A-F]{4}:[0-9A-F]{4}$/.test(e.pciVendorSelector || ""))
					fail(kind, `${e.resourceName}: pciVendorSelector must be VVVV:DDDD`);
			}
		}
		if (n === 0) fail("KubeVirt", "no permitted host devices");
		else console.log(`KubeVirt: ${n} permitted host devices`);
	}
} else {
	const base = process.env.K8S_MODELS_DIR || "/usr/local/lib/hostdevd-test/node_modules";
	const load = async (p) => import(pathToFileURL(`${base}/${p}.js`).href);
	const kinds = {
		"apps/v1/DaemonSet": ["kubernetes-models/apps/v1/DaemonSet", "DaemonSet"],
		"v1/ServiceAccount": ["kubernetes-models/v1/ServiceAccount", "ServiceAccount"],
		"v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "ConfigMap"],
	};
	for (const d of docs) {
		const k = kinds[`${d.apiVersion}/${d.kind}`];
		if (!k) { fail(`${d.apiVersion}/${d.kind}`, "no schema for this kind"); continue; }
		try {
			const mod = await load(k[0]);
			const Model = mod[k[1]] ?? mod.default?.[k[1]];
			new Model(d).validate();
			console.log(`${d.kind} ${d.metadata?.name}: valid`);
		} catch (e) {
			fail(`${d.kind} ${d.metadata?.name}`, e);
		}
	}
}
process.exit(failed ? 1 : 0);
