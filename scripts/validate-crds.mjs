// Validates the custom resources of rendered manifests (KEDA, cert-manager, the Prometheus
// operator) against their CRDs' OpenAPI schemas, as compiled into the @kubernetes-models
// packages (scripts/setup.sh installs them in $EASEL_TOOLS_DIR/deploy-node). Reads a JSON array of
// objects on stdin; exits non-zero naming each invalid object, or an object of a kind this
// script does not know (so a new CRD kind cannot slip through unvalidated).
//
// The compiled schemas check types, required fields and enums; like the CRDs themselves, they
// do not reject unknown fields.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.env.EASEL_TOOLS_DIR ?? join(process.env.HOME ?? "", ".cache/easel-tools");
const nodeModules = join(tools, "deploy-node/node_modules");
// apiVersion → the package holding its group's compiled schemas.
const packages = {
  "keda.sh/v1alpha1": "@kubernetes-models/keda",
  "cert-manager.io/v1": "@kubernetes-models/cert-manager",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator",
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const objects = JSON.parse(input);
let failed = 0;
for (const object of objects) {
  const name = `${object.apiVersion}/${object.kind} ${object.metadata?.name}`;
  const pkg = packages[object.apiVersion];
  // The packages export their modules to `import` only; load the file by path.
  const file = pkg && join(nodeModules, pkg, object.apiVersion, `${object.kind}.js`);
  const Model = file && existsSync(file) ? (await import(pathToFileURL(file)))[object.kind] : null;
  if (typeof Model !== "function") {
    console.error(`${name}: no schema known for this kind`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.error(`${name}: ${error.message}`);
    failed++;
  }
}
if (failed > 0) process.exit(1);
console.log(`${objects.length} custom resources valid`);
