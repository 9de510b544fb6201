// Node-RED settings for running the example flow headless (tests, containers).
process.env.VPP_PREFIX = process.env.VPP_PREFIX || "vpp"; // the semookii-bridge config node reads ${VPP_PREFIX}
// The editor is off; the flow's HTTP endpoints (/vpp/command, /vpp/state, /vpp/plan) are served at the root. The
// palette (@semookii-bridge/node-red) must be installed in the user directory (docs/node-red.md).
module.exports = {
    flowFile: "semookii-flow.json",
    httpAdminRoot: false,
    httpNodeRoot: "/",
    credentialSecret: false,
    logging: { console: { level: process.env.NODE_RED_LOG_LEVEL || "warn", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};
