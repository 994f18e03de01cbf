// The official TypeScript MCP client (the transport Claude Code uses) calling one tool
// through mcphost. Prints one JSON line per progress notification, then one with the result.
//
//   node call.mjs http://127.0.0.1:8080/mcp TOOL '{"a": 1}'
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
const [url, name, args] = process.argv.slice(2);
const client = new Client({ name: "mcphost-e2e-call", version: "1.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
const result = await client.callTool({ name, arguments: JSON.parse(args ?? "{}") }, undefined, {
  onprogress: (progress) => emit("progress", { progress: progress.progress, total: progress.total }),
  timeout: 60_000,
});
emit("result", { result });
await client.close();
