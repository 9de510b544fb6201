// Node-RED settings for running the example flow headless (tests, containers).
// The editor is off; the flow's HTTP endpoints (/vpp/command, /vpp/state) are served at the root.
module.exports = {
    flowFile: "semookii-flow.json",
    httpAdminRoot: false,
    httpNodeRoot: "/",
    credentialSecret: false,
    logging: { console: { level: process.env.NODE_RED_LOG_LEVEL || "warn", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};
