// The TypeScript peer: the official MCP SDK's Streamable HTTP server on express with a map
// of sessions, built as the SDK's own example (examples/server/simpleStreamableHttp) builds
// it, serving the benchmark's no-op tools: `add` (and `add_async`, the same: every tool of
// the TypeScript SDK is a callback on Node's one event loop).
//
// Usage: node server.mjs PORT   (run from the directory the bench installed the packages in)

import { randomUUID } from "node:crypto";
import * as z from "zod/v4";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { InMemoryEventStore } from "@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js";

const port = Number(process.argv[2]);

function getServer() {
  const server = new McpServer({ name: "bench", version: "1.0.0" });
  for (const name of ["add", "add_async"]) {
    // The Python servers' `add(a: int, b: int) -> int` answers with text and structured
    // content ({"result": 3}); this answers the same.
    server.registerTool(
      name,
      {
        description: "Add two integers.",
        inputSchema: { a: z.number().int(), b: z.number().int() },
        outputSchema: { result: z.number().int() },
      },
      async ({ a, b }) => ({
        content: [{ type: "text", text: String(a + b) }],
        structuredContent: { result: a + b },
      }),
    );
  }
  return server;
}

const app = createMcpExpressApp();
const transports = new Map();

app.post("/mcp", async (req, res) => {
  const sessionId = req.headers["mcp-session-id"];
  try {
    let transport = sessionId ? transports.get(sessionId) : undefined;
    if (!transport && !sessionId && isInitializeRequest(req.body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: new InMemoryEventStore(),
        onsessioninitialized: (id) => {
          transports.set(id, transport);
        },
      });
      transport.onclose = () => {
        if (transport.sessionId) transports.delete(transport.sessionId);
      };
      await getServer().connect(transport);
    } else if (!transport) {
      res.status(sessionId ? 404 : 400).json({
        jsonrpc: "2.0",
        error: { code: -32000, message: sessionId ? "Session not found" : "No valid session ID provided" },
        id: null,
      });
      return;
    }
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    console.error("Error handling MCP request:", error);
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: "2.0", error: { code: -32603, message: "Internal server error" }, id: null });
    }
  }
});

async function sessionRequest(req, res) {
  const transport = transports.get(req.headers["mcp-session-id"]);
  if (!transport) {
    res.status(404).json({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null });
    return;
  }
  await transport.handleRequest(req, res);
}

app.get("/mcp", sessionRequest);
app.delete("/mcp", sessionRequest);
// The harness's readiness check.
app.get("/health", (req, res) => res.json({ status: "ok" }));

app.listen(port, "127.0.0.1", (error) => {
  if (error) {
    console.error("Failed to start server:", error);
    process.exit(1);
  }
  console.error(`listening on 127.0.0.1:${port}`);
});
