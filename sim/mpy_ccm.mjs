// The CCM firmware from a flash image, on real MicroPython (the WebAssembly port), its UART on a pty.
//
//   node sim/mpy_ccm.mjs --fd FD --flash DIR [--mac MAC]
//
// DIR holds the files of the module's filesystem (what `ccm build` packed: ccm/*.mpy, lib/, conf0.json);
// they are copied to /flash in MicroPython's filesystem and the CCM runs from them, not from the source
// tree. FD is the pty master this process inherited; whoever opens the pty's other end is the host.
// PARTS (--parts) holds the image's app slots and otadata as files, copied to /parts and written back the
// same way. A reset (machine.reset() on a module: ccm_host.reset() here) writes /flash back to DIR, says
// "ccm: reset" and ends the process; sim/mpy_ccm.py starts the next boot in a fresh interpreter, as a
// module's reset does. (process.exit() would hang: libuv joins its thread blocked reading the pty.)
import fs from "fs";
import path from "path";
import { fileURLToPath, pathToFileURL } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..", "tests/mpy/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
if (!fs.existsSync(pkg)) {
  console.error("MicroPython WebAssembly is not installed: run  npm ci --prefix tests/mpy");
  process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(pkg));

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const fd = parseInt(opt("--fd"), 10);
const flash = opt("--flash");
const parts = opt("--parts");  // the image's app partitions and otadata, as files (sim/mpy_ccm.py)
const mac = opt("--mac", "24:0A:C4:00:00:01");

const mp = await loadMicroPython({
  heapsize: 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyTree(src, dest) {
  try { mp.FS.mkdir(dest); } catch (e) { /* exists */ }
  for (const name of fs.readdirSync(src)) {
    const s = path.join(src, name);
    if (fs.statSync(s).isDirectory()) copyTree(s, dest + "/" + name);
    else mp.FS.writeFile(dest + "/" + name, fs.readFileSync(s));
  }
}
copyTree(flash, "/flash");
if (parts) copyTree(parts, "/parts");

function writeBack(src, dest) {
  for (const name of mp.FS.readdir(src)) {
    if (name === "." || name === "..") continue;
    const s = src + "/" + name;
    if (mp.FS.isDir(mp.FS.stat(s).mode)) {
      fs.mkdirSync(path.join(dest, name), { recursive: true });
      writeBack(s, path.join(dest, name));
    } else fs.writeFileSync(path.join(dest, name), mp.FS.readFile(s));
  }
}

const buf = Buffer.alloc(4096);
mp.registerJsModule("ccm_host", {
  mac,
  reset: () => {
    fs.rmSync(flash, { recursive: true, force: true });  // what the firmware deleted goes too
    fs.mkdirSync(flash, { recursive: true });
    writeBack("/flash", flash);
    if (parts) writeBack("/parts", parts);
    fs.writeSync(1, "ccm: reset\n");
    process.kill(process.pid, "SIGKILL");
  },
  // a file of /parts written through at once (otadata: what the bootloader reads, as a chip's flash keeps it)
  flush: (name) => { if (parts) fs.writeFileSync(path.join(parts, name), mp.FS.readFile("/parts/" + name)); },
  read: (n) => new Promise((resolve) => {
    fs.read(fd, buf, 0, Math.min(n, buf.length), null, (err, got) => {
      resolve(err || !got ? "" : buf.subarray(0, got).toString("hex"));
    });
  }),
  write: (hex) => { const b = Buffer.from(hex, "hex"); let off = 0; while (off < b.length) off += fs.writeSync(fd, b, off); },
});

process.on("SIGTERM", () => process.kill(process.pid, "SIGKILL"));  // see above: exit() would hang
console.log("booting the CCM from /flash on MicroPython (WebAssembly)");
await mp.runPythonAsync(`
import sys
sys.path[:0] = ["/flash", "/flash/lib"]
from ccm.boot import at_boot  # as the module's main.py: a staged self-update first
at_boot("/flash")
import asyncio
from ccm.board.wasm import WasmBoard
from ccm.main import factory_config, run_forever
await asyncio.create_task(run_forever(WasmBoard("/flash"), factory_config("/flash/conf0.json"), switch=False))
`);
