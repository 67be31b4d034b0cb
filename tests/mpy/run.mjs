// Run Python on real MicroPython (the WebAssembly port) with the repository's ccm/ package installed.
//
//   node tests/mpy/run.mjs [--heap BYTES] [--no-ccm] [--dir SRC=DEST ...] FILE.py [ARGS...]
//
// ccm/ is copied to /ccm in MicroPython's filesystem (so `import ccm.rpc` works; --no-ccm leaves it
// out, to run a built firmware's .mpy files instead), every --dir tree is copied too (.py, .mpy, .json), FILE.py runs with top-level `await` allowed, and sys.argv holds ARGS. The exit code is 1
// when the script raised, else 0.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const args = process.argv.slice(2);
let heap = 1024 * 1024;
let dirs = [["ccm", "/ccm"]];
while (args.length && args[0].startsWith("--")) {
  const opt = args.shift();
  if (opt === "--heap") heap = parseInt(args.shift(), 10);
  else if (opt === "--no-ccm") dirs = dirs.filter(([src]) => src !== "ccm");
  else if (opt === "--dir") dirs.push(args.shift().split("="));
  else throw new Error(`unknown option ${opt}`);
}
const script = args.shift();
if (!script) {
  console.error("usage: node tests/mpy/run.mjs [--heap BYTES] [--dir SRC=DEST] FILE.py [ARGS...]");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyTree(src, dest) {
  try { mp.FS.mkdir(dest); } catch (e) { /* exists */ }
  for (const name of fs.readdirSync(src)) {
    if (name === "__pycache__" || name === "node_modules") continue;
    const s = path.join(src, name);
    const d = dest + "/" + name;
    if (fs.statSync(s).isDirectory()) copyTree(s, d);
    else if (/\.(py|mpy|json)$/.test(name)) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}
for (const [src, dest] of dirs) copyTree(path.resolve(root, src), dest);

const code = fs.readFileSync(script, "utf8");
mp.runPython(`import sys\nsys.path.insert(0, "/")\nsys.argv[:] = ${JSON.stringify([script, ...args])}`);
try {
  await mp.runPythonAsync(code);
} catch (e) {
  if (e.name === "PythonError") {
    process.stderr.write(e.message + "\n");
    process.exit(1);
  }
  throw e;
}
