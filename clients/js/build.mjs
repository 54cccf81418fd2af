#!/usr/bin/env node
// Makes clients/js/switchboard.js, the one file every node serves at
// `/switchboard.js`, from the ES modules in clients/js/src/ (entry:
// src/index.js). No dependencies, Node 18 or later:
//
//   node clients/js/build.mjs           write switchboard.js
//   node clients/js/build.mjs --check   exit 1 when switchboard.js is not the bundle of src/
//
// The bundle is the modules concatenated in dependency order (each after the
// modules it imports), their `import` statements removed and the `export`
// of their declarations dropped, followed by the entry's `export` lists: one
// ES module with the same exports as src/index.js. So that this stays that
// simple, the modules keep to a subset, checked here (anything else is an
// error, not a silently wrong bundle):
//
// - imports are `import {a, b} from './relative.js';` at the top level (no
//   `as`, no default or namespace imports, no bare specifiers), and every
//   name imported is exported by the module named;
// - a module other than the entry exports only declarations
//   (`export function|class|const|let ...`); the entry only imports and
//   re-exports (`export {...};`, `export default Name;`);
// - top-level names are unique across all modules (they share one scope in
//   the bundle); no import cycles.
//
// clients/js/test/build.test.mjs fails when switchboard.js is not what this
// script makes from src/, so an edit to src/ without a rebuild (or an edit
// to switchboard.js itself) does not go unnoticed.

import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SRC_DIR = path.join(here, 'src');
export const OUT_FILE = path.join(here, 'switchboard.js');

const IMPORT_RE = /^import\s*\{([^}]*)\}\s*from\s*'([^']+)';[ \t]*\n/gm;
const DECL_RE = /^(export\s+)?(?:async\s+)?(?:function\s*\*?|class|const|let|var)\s+([A-Za-z_$][\w$]*)/gm;

function fail(file, msg) { throw new Error('build.mjs: ' + file + ': ' + msg); }

function readModule(srcDir, rel, isEntry) {
  const file = path.join(srcDir, rel);
  const text = fs.readFileSync(file, 'utf8');
  const imports = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[2];
    if (!spec.startsWith('./') && !spec.startsWith('../')) fail(rel, 'import from ' + spec + ': only relative imports');
    const names = m[1].split(',').map(s => s.trim()).filter(Boolean);
    for (const n of names) if (!/^[A-Za-z_$][\w$]*$/.test(n)) fail(rel, 'import {' + n + '}: no renaming ("as") in imports');
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
    imports.push({target, names});
  }
  const body = text.replace(IMPORT_RE, '');
  for (const line of body.split('\n')) {
    if (/^import\b/.test(line)) fail(rel, 'unsupported import: ' + line);
    if (/^\s*export\b/.test(line) && !/^export\s+/.test(line)) fail(rel, 'indented export: ' + line);
  }
  const decls = [];
  const exports = new Set();
  for (const m of body.matchAll(DECL_RE)) {
    decls.push(m[2]);
    if (m[1]) exports.add(m[2]);
  }
  for (const line of body.split('\n')) {
    if (!/^export\b/.test(line)) continue;
    if (/^export\s+(?:async\s+)?(?:function|class|const|let|var)\b/.test(line)) {
      if (isEntry) fail(rel, 'the entry only re-exports: ' + line);
      continue;
    }
    if (!isEntry) fail(rel, 'only declarations are exported from a module (export function/class/const/let): ' + line);
  }
  if (isEntry) {
    for (const m of body.matchAll(/^export\s*\{([^}]*)\}\s*;/gm)) {
      for (const n of m[1].split(',').map(s => s.trim()).filter(Boolean)) exports.add(n);
    }
  }
  return {rel, text, body, imports, decls, exports};
}

/**
 * The bundle of the modules under `srcDir` from `entry`, as a string.
 * Throws when a module leaves the subset described at the top of this file.
 */
export function bundle(srcDir = SRC_DIR, entry = 'index.js') {
  const modules = new Map();
  const order = [];
  const visiting = new Set();
  const visit = (rel, from) => {
    if (modules.has(rel)) return;
    if (visiting.has(rel)) fail(from, 'import cycle through ' + rel);
    if (!fs.existsSync(path.join(srcDir, rel))) fail(from, 'imports ' + rel + ', which does not exist');
    visiting.add(rel);
    const mod = readModule(srcDir, rel, rel === entry);
    for (const imp of mod.imports) visit(imp.target, rel);
    visiting.delete(rel);
    modules.set(rel, mod);
    order.push(mod);
  };
  visit(entry, entry);

  const owner = new Map();
  for (const mod of order) {
    for (const imp of mod.imports) {
      const target = modules.get(imp.target);
      for (const n of imp.names) if (!target.exports.has(n)) fail(mod.rel, 'imports ' + n + ' from ' + imp.target + ', which does not export it');
    }
    for (const d of mod.decls) {
      if (owner.has(d)) fail(mod.rel, 'top-level name ' + d + ' is also declared in ' + owner.get(d) + ' (modules share one scope in the bundle)');
      owner.set(d, mod.rel);
    }
  }

  const entryMod = modules.get(entry);
  const lines = entryMod.body.split('\n');
  let k = 0;
  while (k < lines.length && lines[k].startsWith('//')) k++;
  const entryComment = lines.slice(0, k).join('\n');
  const entryRest = lines.slice(k).join('\n').trim();

  const rule = '// ' + '='.repeat(75);
  const out = [
    '// GENERATED by clients/js/build.mjs from clients/js/src/: do not edit this file.',
    '// Edit the modules in src/ and run `node clients/js/build.mjs` (a unit test fails when',
    '// this file is not the bundle of src/).',
    '//',
    entryComment,
    '',
  ];
  for (const mod of order) {
    if (mod === entryMod) continue;
    const body = mod.body
      .replace(/^export\s+(?=(?:async\s+)?(?:function|class|const|let|var)\b)/gm, '')
      .trim();
    out.push(rule, '// src/' + mod.rel, rule, '', body, '');
  }
  out.push(rule, '// exports (src/index.js)', rule, '', entryRest, '');
  return out.join('\n');
}

function main(argv) {
  const text = bundle();
  if (argv.includes('--check')) {
    const have = fs.existsSync(OUT_FILE) ? fs.readFileSync(OUT_FILE, 'utf8') : '';
    if (have !== text) {
      console.error('clients/js/switchboard.js is not the bundle of clients/js/src/: run `node clients/js/build.mjs`');
      return 1;
    }
    console.log('clients/js/switchboard.js is the bundle of clients/js/src/ (' + text.length + ' bytes)');
    return 0;
  }
  fs.writeFileSync(OUT_FILE, text);
  console.log('wrote clients/js/switchboard.js (' + text.length + ' bytes)');
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
