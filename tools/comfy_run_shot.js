// comfy_run_shot.js - queue a workflow FROM the real ComfyUI frontend (headless chromium), wait for
// it to finish, then screenshot: so extensions' onExecuted hooks (e.g. web/uir_lora.js) have drawn.
// (../shared/tools/comfy_ui_probe.js screenshots before anything runs.)
//
//   NODE_PATH=$COMFY_HOME/pw/node_modules node tools/comfy_run_shot.js --workflow WF.json
//       --screenshot full.png [--node-type UIR_DegradationEstimator --node-shot node.png [--node-index 1]]
//       [--help-node UIR_Compare --help-shot help.png] [--new-node UIR_Restore]
//       [--templates-shot templates.png --pack PACK_FOLDER_NAME]
//       [--server 127.0.0.1:8188] [--set '{"3": {"bank": "x"}}'] [--timeout 300]
// WF.json: an API prompt, or a UI workflow (nodes + links: loaded with its own layout; --set then ignored).
// --help-shot: the node library's help panel for --help-node (its web/docs page).
// --new-node: also add a fresh node of that type and report its widget values (seed control defaults).
// Loopback servers only. Prints one JSON line: {status, node_found, widgets_values, new_node, console_errors}.
const { chromium } = require('playwright-core');
const fs = require('fs');

function parseArgs(argv) {
  const o = { server: '127.0.0.1:8188', timeout: '300' };
  for (let i = 0; i < argv.length; i += 2) o[argv[i].slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[i + 1];
  if (!o.workflow || !o.screenshot) throw new Error('--workflow and --screenshot are required');
  if (!/^(127\.|localhost)/.test(o.server)) throw new Error('loopback servers only');
  return o;
}

(async () => {
  const a = parseArgs(process.argv.slice(2));
  let wf = JSON.parse(fs.readFileSync(a.workflow, 'utf8'));
  wf = wf.prompt || wf;
  const isUi = Boolean(wf.nodes && wf.links);
  if (!isUi) for (const [id, inputs] of Object.entries(JSON.parse(a.set || '{}'))) Object.assign(wf[id].inputs, inputs);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`http://${a.server}/`, { waitUntil: 'networkidle' });
  await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 60000 });
  await page.keyboard.press('Escape').catch(() => {});
  if (isUi) await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, wf);
  else await page.evaluate(async (w) => { await window.app.loadApiJson(w, 'workflow.json'); }, wf);
  await page.waitForTimeout(1000);
  const status = await page.evaluate(async (ms) => {
    const { api } = await import('/scripts/api.js');
    const done = new Promise((resolve) => {
      api.addEventListener('execution_success', () => resolve('success'));
      api.addEventListener('execution_error', (e) => resolve(`error: ${JSON.stringify(e.detail).slice(0, 400)}`));
      setTimeout(() => resolve('timeout'), ms);
    });
    await window.app.queuePrompt(0, 1);
    return done;
  }, Number(a.timeout) * 1000);
  await page.waitForTimeout(1000);
  await page.evaluate(() => {
    const c = window.app.canvas;
    const nodes = window.app.graph._nodes;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1]));
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    const scale = Math.min(1, 1360 / (x1 - x0), 820 / (y1 - y0 + 40));
    c.ds.scale = scale; c.ds.offset = [20 / scale - x0, 60 / scale - y0]; c.setDirty(true, true);
  });
  await page.waitForTimeout(500);
  await page.screenshot({ path: a.screenshot });
  let found = false;
  if (a.nodeType && a.nodeShot) {
    const box = await page.evaluate(([type, index]) => {
      const node = window.app.graph._nodes.filter((n) => n.type === type)[index];
      if (!node) return null;
      const c = window.app.canvas;
      c.ds.scale = 1; c.ds.offset = [40 - node.pos[0], 80 - node.pos[1]]; c.setDirty(true, true);
      const r = c.canvas.getBoundingClientRect(); // the canvas sits below the top bar, right of the sidebar
      return { x: r.left + 30, y: r.top + 40, width: node.size[0] + 20, height: node.size[1] + 50 };
    }, [a.nodeType, Number(a.nodeIndex || 0)]);
    if (box) {
      found = true;
      await page.waitForTimeout(500);
      await page.screenshot({ path: a.nodeShot, clip: box });
    }
  }
  // display-only widgets must not leak into the saved workflow's positional widgets_values
  const saved = await page.evaluate((type) => {
    const node = window.app.graph.serialize().nodes.find((n) => n.type === type);
    return node ? node.widgets_values : null;
  }, a.nodeType || '');
  let fresh = null;
  if (a.newNode) {
    fresh = await page.evaluate((type) => {
      const node = window.LiteGraph.createNode(type);
      window.app.graph.add(node);
      return node.widgets.map((w) => [w.name, w.value]);
    }, a.newNode);
  }
  if (a.helpNode && a.helpShot) {
    await page.setViewportSize({ width: 1400, height: 1600 });  // the whole page in one shot
    await page.evaluate(() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library'));
    await page.waitForTimeout(1000);
    await page.locator('input[placeholder="Search Nodes..."]').fill(a.helpNode);
    await page.waitForTimeout(2000);
    const leaf = page.locator('.node-lib-node-container').first();
    await leaf.hover({ force: true });  // the help button shows on hover
    await leaf.locator('.help-button').click({ force: true });
    await page.waitForTimeout(2000);
    await page.screenshot({ path: a.helpShot });
  }
  if (a.templatesShot) {  // Workflow > Browse Templates, this pack's cards, in a window tall enough for all
    await page.setViewportSize({ width: 1400, height: 1500 });
    await page.evaluate(() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates'));
    await page.waitForTimeout(2000);
    if (a.pack) await page.getByText(a.pack, { exact: true }).first().click();
    await page.waitForTimeout(3000);
    await page.screenshot({ path: a.templatesShot });
  }
  console.log(JSON.stringify({ status, node_found: found, widgets_values: saved, new_node: fresh,
    console_errors: errors.slice(0, 10) }));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
