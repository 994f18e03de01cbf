// The official TypeScript MCP client as a team member's client would use it: Streamable
// HTTP with a bearer token. Prints one JSON line per thing it observed, each with `t`, the
// milliseconds since it started; after the slow call it prints {"event": "waiting"} and
// goes on only when a line arrives on stdin (the test stops a replica meanwhile).
//
//   MCPHOST_TOKEN=mcph_… node client.mjs https://localhost:8443/mcp
import readline from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const emit = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, t: performance.now(), ...fields }) + "\n");

const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const url = new URL(process.argv[2]);
const transport = new StreamableHTTPClientTransport(url, {
  requestInit: { headers: { Authorization: `Bearer ${process.env.MCPHOST_TOKEN}` } },
});
// A broken event stream the client reconnects is worth seeing, not fatal.
transport.onerror = (error) => emit("transport_error", { message: String(error?.message ?? error) });
const client = new Client({ name: "mcphost-e2e", version: "1.0.0" });

try {
  await client.connect(transport);
  emit("connected", { sessionId: transport.sessionId, server: client.getServerVersion() });

  const { tools } = await client.listTools();
  emit("tools", { names: tools.map((tool) => tool.name) });

  const echo = await client.callTool({ name: "echo_echo", arguments: { text: "hello" } });
  emit("echo", { result: echo.structuredContent });

  emit("slow_start");
  const slow = await client.callTool({ name: "echo_slow", arguments: { seconds: 2 } }, undefined, {
    onprogress: (progress) => emit("progress", { progress: progress.progress, total: progress.total }),
    timeout: 30_000,
  });
  emit("slow", { result: slow.structuredContent });

  emit("waiting");
  await stdin.next();

  const after = await client.callTool({ name: "echo_echo", arguments: { text: "after" } });
  emit("echo_after", { result: after.structuredContent, sessionId: transport.sessionId });
  const again = await client.listTools();
  emit("tools_after", { count: again.tools.length });
  // Time for the event stream (GET), cut when its replica stopped, to reconnect (the
  // server's retry interval, then the SDK's backoff) or to report that it could not.
  await new Promise((resolve) => setTimeout(resolve, 2500));

  await client.close();
  emit("done");
  process.exit(0);
} catch (error) {
  emit("error", { message: String(error?.stack ?? error) });
  process.exit(1);
}
