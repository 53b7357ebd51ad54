// What the browser tests share (e2e.mjs, edge.mjs): starting `ovation` servers,
// launching Chromium with its fake camera, signing in on a page, and reading how
// many video frames a page has decoded.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** A `step(what)` that logs `[tag] what`. */
export function stepper(tag) {
  return (what) => console.log(`[${tag}] ${what}`);
}

/**
 * Starts the server binary ($OVATION_BIN) listening on `listen` (an ephemeral port by
 * default) with `args` added. Resolves, once it prints the address it listens on, to
 * `{ url, stop }`; its later output lines are logged prefixed with `[name]`.
 */
export function startServer({ name = 'server', listen = '127.0.0.1:0', args = [], ms = 30000 } = {}) {
  const child = spawn(process.env.OVATION_BIN, ['--listen', listen, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal || code)));
  const stop = async (ms = 10000) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), ms);
      await exited;
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    let url = null;
    const timer = setTimeout(() => {
      reject(new Error(`${name} did not say where it listens in ${ms / 1000} s`));
      stop();
    }, ms);
    createInterface({ input: child.stdout }).on('line', (line) => {
      console.log(`[${name}] ${line}`);
      const said = !url && /listening on (http:\/\/\S+)/.exec(line);
      if (said) {
        url = said[1];
        clearTimeout(timer);
        resolve({ name, url, stop });
      }
    });
    child.once('error', (error) => { clearTimeout(timer); reject(error); });
    exited.then((how) => {
      clearTimeout(timer);
      if (!url) reject(new Error(`${name} exited (${how}) before listening`));
    });
  });
}

/** Chromium ($CHROMIUM) with a fake camera and microphone that pages may use without asking. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/** Logs `page`'s console errors, uncaught exceptions and failed requests, tagged `name`. */
export function logPage(name, page) {
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${name} console] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${name} error] ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) console.log(`[${name}] ${r.status()} ${r.request().method()} ${r.url()}`); });
}

/** Screenshots of every open page, as `{prefix}-{context}-{page}.png` in `dir`. */
export async function screenshotAll(browser, dir, prefix = 'failure') {
  for (const [c, context] of browser.contexts().entries()) {
    for (const [n, page] of context.pages().entries()) {
      await page.screenshot({ path: join(dir, `${prefix}-${c}-${n}.png`) }).catch(() => {});
    }
  }
}

/** Signs in on the home page of the server at `base` as `name` with `role`. */
export async function signIn(page, base, name, role) {
  await page.goto(`${base}/`);
  await page.fill('#signin-name', name);
  await page.selectOption('#signin-role', role);
  await page.click('#signin-submit');
  await page.waitForSelector('#whoami:not([hidden])');
}

/** Frames decoded so far by the page's peer connection's inbound video (`pk`: the PK opponent's). */
export async function framesDecoded(page, which = 'main') {
  return page.evaluate(async (which) => {
    const o = window.ovation;
    const pc = o && (which === 'pk' ? o.pk && o.pk.pc : o.pc);
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
    });
    return frames;
  }, which);
}

/** Waits until more than `min` frames are decoded (see framesDecoded). */
export async function waitForFrames(page, which, min, ms = 30000) {
  const deadline = Date.now() + ms;
  let frames = 0;
  while ((frames = await framesDecoded(page, which)) <= min) {
    if (Date.now() > deadline) throw new Error(`only ${frames} ${which} video frames decoded in ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return frames;
}

/** Waits until the <video> at `selector` shows a picture and its time advances. */
export async function videoPlays(page, selector, ms = 10000) {
  const start = await page.$eval(selector, (v) => v.currentTime);
  await page.waitForFunction(([s, t]) => {
    const v = document.querySelector(s);
    return v && !v.paused && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > t + 0.5;
  }, [selector, start], { timeout: ms });
}
