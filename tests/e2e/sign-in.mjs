// The official TypeScript MCP client as Claude Code runs it for a server added without a
// token: with an OAuth provider, so that a 401 starts the sign-in (discovery, then dynamic
// client registration). Prints one JSON line: {"event": "connected"}, {"event": "sign_in",
// "url": ...} when the flow got as far as sending the user to an authorization server, or
// {"event": "error", "name": ..., "message": ...} with what the client reports.
//
//   node sign-in.mjs http://127.0.0.1:8080/mcp
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

const callback = "http://127.0.0.1:9/callback"; // never reached: nobody signs in here
let client_information;
const provider = {
  get redirectUrl() {
    return callback;
  },
  get clientMetadata() {
    return {
      client_name: "mcphost-e2e",
      redirect_uris: [callback],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  clientInformation: () => client_information,
  saveClientInformation: (information) => {
    client_information = information;
  },
  tokens: () => undefined,
  saveTokens: () => {},
  redirectToAuthorization: (url) => emit("sign_in", { url: String(url) }),
  saveCodeVerifier: () => {},
  codeVerifier: () => "",
};

const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]), { authProvider: provider });
const client = new Client({ name: "mcphost-e2e", version: "1.0.0" });
try {
  await client.connect(transport);
  emit("connected");
  process.exit(0);
} catch (error) {
  emit("error", { name: String(error?.name), message: String(error?.message ?? error) });
  process.exit(1);
}
