// mcp_server_client.cjs -- an MCP client from the npm registry (the MCP
// TypeScript SDK's Client and StdioClientTransport) drives `loomctl mcp`
// against a running loomd, as an editor or an agent would. Run by
// tests/unit/mcp_server_test.sh, which starts loomd with the workflows named
// below and puts the SDK on NODE_PATH. Prints TAP lines numbered from
// FIRST; the script prints the plan.
//
//   node mcp_server_client.cjs LOOMCTL SOCKET STDERR_LOG FIRST
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const { execFileSync } = require("node:child_process");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
const { ListResourcesResultSchema } = require("@modelcontextprotocol/sdk/types.js");

const [loomctl, socket, stderrLog, firstArg] = process.argv.slice(2);
let n = Number(firstArg);
let failed = false;

async function check(desc, fn) {
    try {
        await fn();
        console.log(`ok ${n} - ${desc}`);
    } catch (e) {
        failed = true;
        console.log(`not ok ${n} - ${desc}`);
        for (const line of String(e && e.stack ? e.stack : e).split("\n"))
            console.log(`# ${line}`);
    }
    n++;
}

async function connect() {
    const client = new Client({ name: "loom-test", version: "1.0.0" }, { capabilities: {} });
    const transport = new StdioClientTransport({
        command: loomctl,
        args: ["mcp", "--socket", socket],
        stderr: fs.openSync(stderrLog, "a"),
    });
    await client.connect(transport);
    // Every progress notification as it comes off the wire. The SDK hands
    // notifications to their handlers a tick later but settles a response
    // at once, so a progress notification read in the same chunk as its
    // call's result reaches no handler: what loomctl sent is checked here.
    client.wireProgress = [];
    const deliver = transport.onmessage;
    transport.onmessage = (msg, extra) => {
        if (msg && msg.method === "notifications/progress")
            client.wireProgress.push(msg.params);
        deliver(msg, extra);
    };
    return client;
}

// The jobs of workflow NAME in STATE, as loomd lists them.
function jobs(name, state) {
    const out = execFileSync(loomctl, ["list", "--socket", socket, "--json", "--workflow", name,
                                       "--state", state], { encoding: "utf8" });
    return JSON.parse(out).jobs;
}

// Waits until COND() holds, polling loomd: the cancel travels from the
// client through loomctl to loomd, so there is no event to wait for here.
async function until(what, cond) {
    const deadline = Date.now() + 20000;
    while (!cond()) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// A promise of the first progress notification of a call, and its handler.
function firstProgress() {
    let onprogress;
    const seen = new Promise((resolve) => { onprogress = resolve; });
    return { seen, onprogress };
}

async function main() {
    const client = await connect();

    await check("initialize: the server is loom and gives instructions", async () => {
        assert.equal(client.getServerVersion().name, "loom");
        assert.match(client.getInstructions() || "", /workflow/);
        assert.ok(client.getServerCapabilities().tools);
    });

    await check("tools/list: each workflow is a tool, its input: declaration the schema", async () => {
        const { tools } = await client.listTools();
        const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
        assert.deepEqual(Object.keys(byName).sort(), ["any", "echo", "slow", "steps"]);
        assert.equal(byName.echo.description, "Echoes the text back.");
        assert.deepEqual(byName.echo.inputSchema, {
            type: "object",
            properties: { text: { type: "string", description: "what to echo" },
                          times: { type: "integer", default: 1 } },
            required: ["text"],
        });
        assert.deepEqual(byName.any.inputSchema, { type: "object" });
    });

    await check("tools/call: the job's output is the result (structuredContent for an object)", async () => {
        const r = await client.callTool({ name: "echo", arguments: { text: "hi" } });
        assert.equal(r.isError, false);
        assert.deepEqual(r.structuredContent, { said: "echo hi" });
        assert.deepEqual(JSON.parse(r.content[0].text), { said: "echo hi" });
        assert.match(r._meta["loom/job"], /^[0-9A-Z]{26}$/);
        const s = await client.callTool({ name: "any", arguments: {} });
        assert.equal(s.isError, false);
        assert.equal(s.structuredContent, undefined);
        assert.equal(JSON.parse(s.content[0].text), "hi");
    });

    await check("tools/call with a progressToken: each finished step is progress", async () => {
        const handled = [];
        client.wireProgress.length = 0;
        const r = await client.callTool({ name: "steps", arguments: {} }, undefined,
                                        { onprogress: (p) => handled.push(p) });
        const seen = client.wireProgress.slice();
        assert.ok(handled.length > 0, "the SDK handed no progress to the caller");
        assert.equal(r.isError, false);
        assert.equal(JSON.parse(r.content[0].text), "echo three");
        // every step, the first ones too: loomctl follows events from
        // before the submit
        const messages = seen.map((p) => p.message);
        for (const step of ["do.chain[0]", "do.chain[1]", "do.chain[2]"])
            assert.ok(messages.includes(`${step} finished`), `no progress for ${step}: ${messages}`);
        for (let i = 1; i < seen.length; i++)
            assert.ok(seen[i].progress > seen[i - 1].progress, "progress increases");
    });

    await check("a failed job is a result with isError and its typed error", async () => {
        const r = await client.callTool({ name: "echo", arguments: {} });
        assert.equal(r.isError, true);
        assert.match(r.content[0].text, /invalid_input.*'text' is required/);
    });

    await check("an unknown tool is error -32602, with the near name", async () => {
        await assert.rejects(client.callTool({ name: "ecoh", arguments: {} }),
                             (e) => e.code === -32602 && /did you mean 'echo'/.test(e.message));
    });

    await check("ping answers; a method it does not serve is -32601", async () => {
        await client.ping();
        await assert.rejects(client.request({ method: "resources/list", params: {} },
                                            ListResourcesResultSchema),
                             (e) => e.code === -32601);
    });

    await check("cancelling the request cancels its job", async () => {
        const ac = new AbortController();
        const started = firstProgress();
        const call = client.callTool({ name: "slow", arguments: {} }, undefined,
                                     { signal: ac.signal, onprogress: started.onprogress });
        await started.seen; // the job runs: its first step finished
        ac.abort("the test cancels");
        await assert.rejects(call);
        await until("the job to be cancelled", () => jobs("slow", "cancelled").length === 1);
        assert.equal(jobs("slow", "running").length, 0);
    });

    await check("a client that leaves has its running jobs cancelled", async () => {
        const other = await connect();
        const started = firstProgress();
        const call = other.callTool({ name: "slow", arguments: {} }, undefined,
                                    { onprogress: started.onprogress });
        call.catch(() => {}); // it ends with the connection
        await started.seen;
        await other.close();
        await until("the job to be cancelled", () => jobs("slow", "cancelled").length === 2);
        assert.equal(jobs("slow", "running").length, 0);
    });

    await client.close();
}

main().then(
    () => process.exit(failed ? 1 : 0),
    (e) => {
        console.log(`not ok ${n} - the client ran: ${e && e.message}`);
        process.exit(1);
    });
