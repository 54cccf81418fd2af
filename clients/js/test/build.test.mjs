// build.mjs: clients/js/switchboard.js (the file every node serves at
// /switchboard.js: Sources/SwitchboardServer/Resources/switchboard.js is a
// symlink to it, embedded in the binary) must be the bundle of src/. And the
// bundler refuses modules it would bundle wrongly.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';
import {bundle, OUT_FILE, SRC_DIR} from '../build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

test('switchboard.js is the bundle of src/ (run `node clients/js/build.mjs` after editing src/)', () => {
  const want = bundle();
  const have = fs.readFileSync(OUT_FILE, 'utf8');
  assert.ok(have === want, 'clients/js/switchboard.js is stale or edited by hand: run `node clients/js/build.mjs`');
});

test('the node serves that file: Resources/switchboard.js and demo.html point at clients/js', () => {
  const res = path.join(here, '..', '..', '..', 'Sources', 'SwitchboardServer', 'Resources');
  for (const name of ['switchboard.js', 'demo.html']) {
    const p = path.join(res, name);
    assert.equal(fs.realpathSync(p), fs.realpathSync(path.join(here, '..', name)), p + ' is not clients/js/' + name);
  }
});

test('the bundle exports what src/index.js exports, the same objects in behaviour', async () => {
  const [mod, bun] = await Promise.all([import('../src/index.js'), import(pathToFileURL(OUT_FILE).href)]);
  assert.deepEqual(Object.keys(bun).sort(), Object.keys(mod).sort());
  assert.equal(bun.default, bun.Switchboard);
  assert.equal(bun.VERSION, mod.VERSION);
  assert.deepEqual(bun.splitBatches([{id: 1}, {id: 2}], 8).map(b => b.text), mod.splitBatches([{id: 1}, {id: 2}], 8).map(b => b.text));
});

test('every module of src/ is in the bundle', () => {
  const text = bundle();
  const walk = d => fs.readdirSync(d, {withFileTypes: true}).flatMap(e =>
    e.isDirectory() ? walk(path.join(d, e.name)) : [path.relative(SRC_DIR, path.join(d, e.name)).split(path.sep).join('/')]);
  for (const rel of walk(SRC_DIR)) {
    if (rel === 'index.js') continue;
    assert.ok(text.includes('\n// src/' + rel + '\n'), rel + ' is not imported from src/index.js (directly or not)');
  }
});

function tmpSrc(t, files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-build-'));
  t.after(() => fs.rmSync(dir, {recursive: true, force: true}));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), {recursive: true});
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

test('bundle of a small tree: dependency order, imports gone, one module with the entry exports', async t => {
  const dir = tmpSrc(t, {
    'index.js': "// entry\nimport {b} from './b.js';\nimport {a} from './sub/a.js';\n\nexport {a, b};\nexport default b;\n",
    'b.js': "// b\nimport {a} from './sub/a.js';\n\nexport function b() { return a() + 1; }\n",
    'sub/a.js': "// a\n\nconst secret = 41;\nexport function a() { return secret; }\n",
  });
  const text = bundle(dir);
  assert.ok(text.indexOf('// src/sub/a.js') < text.indexOf('// src/b.js'), 'a module after what it imports');
  assert.ok(!/^import /m.test(text));
  const file = path.join(dir, 'out.mjs');
  fs.writeFileSync(file, text);
  const m = await import(pathToFileURL(file).href);
  assert.deepEqual(Object.keys(m).sort(), ['a', 'b', 'default']);
  assert.equal(m.b(), 42);
});

test('the bundler refuses what it cannot bundle faithfully', async t => {
  const cases = {
    'two modules declare one name': {
      'index.js': "import {a} from './a.js';\nimport {b} from './b.js';\nexport {a, b};\n",
      'a.js': "const x = 1;\nexport function a() { return x; }\n",
      'b.js': "const x = 2;\nexport function b() { return x; }\n",
    },
    'renaming import': {
      'index.js': "import {a as z} from './a.js';\nexport {z};\n",
      'a.js': "export function a() {}\n",
    },
    'import cycle': {
      'index.js': "import {a} from './a.js';\nexport {a};\n",
      'a.js': "import {b} from './b.js';\nexport function a() { return b; }\n",
      'b.js': "import {a} from './a.js';\nexport function b() { return a; }\n",
    },
    'name not exported': {
      'index.js': "import {a} from './a.js';\nexport {a};\n",
      'a.js': "function a() {}\n",
    },
    'export list in a module': {
      'index.js': "import {a} from './a.js';\nexport {a};\n",
      'a.js': "function a() {}\nexport {a};\n",
    },
    'namespace import': {
      'index.js': "import * as a from './a.js';\nexport {a};\n",
      'a.js': "export function a() {}\n",
    },
  };
  for (const [what, files] of Object.entries(cases)) {
    const dir = tmpSrc(t, files);
    assert.throws(() => bundle(dir), /build\.mjs: /, what);
  }
});
