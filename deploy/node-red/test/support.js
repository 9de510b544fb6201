"use strict";
// What the specs share: Node-RED's test helper on the runtime named by NODE_RED_PATH (else this package's
// devDependency), a real mosquitto on a free loopback port, and a scripted stand-in for the bridge on it.

const childProcess = require("child_process");
const fs = require("fs");
const net = require("net");
const os = require("os");
const path = require("path");

const helper = require("node-red-node-test-helper");

const runtime = process.env.NODE_RED_PATH || require.resolve("node-red");
helper.init(runtime);
const from = { paths: [path.dirname(runtime)] };
console.log(`    specs on Node-RED ${helper._RED.version()}, Node.js ${process.version}`);
const mqtt = require(require.resolve("mqtt", from));
const core = (file) => require(require.resolve(`@node-red/nodes/core/${file}`, from));

const NODES = {
    broker: core("network/10-mqtt.js"),
    catch: core("common/25-catch.js"),
    bridge: require("../nodes/semookii-bridge.js"),
    command: require("../nodes/semookii-command.js"),
    plan: require("../nodes/semookii-plan.js"),
    state: require("../nodes/semookii-state.js"),
    request: require("../nodes/semookii-request.js"),
};

function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.on("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

/** mosquitto on a free port, anonymous, loopback only; resolves once it accepts connections. */
async function startBroker() {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "semookii-spec-"));
    const conf = path.join(dir, "mosquitto.conf");
    fs.writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    const binary = fs.existsSync("/usr/sbin/mosquitto") ? "/usr/sbin/mosquitto" : "mosquitto";
    const proc = childProcess.spawn(binary, ["-c", conf], { stdio: "ignore" });
    for (let i = 0; i < 100; i++) {
        const up = await new Promise((resolve) => {
            const socket = net.connect(port, "127.0.0.1", () => socket.end() && resolve(true));
            socket.on("error", () => resolve(false));
        });
        if (up) {
            return { port, stop: () => proc.kill() };
        }
        await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill();
    throw new Error("mosquitto did not start");
}

/** An MQTT client standing in for the bridge: `on(pattern, reply)` answers messages on topics matching it. */
async function fakeBridge(port) {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `fake-bridge-${process.pid}` });
    await new Promise((resolve, reject) => client.once("connect", resolve).once("error", reject));
    await client.subscribeAsync("vpp/#", { qos: 1 });
    const routes = [];
    const seen = [];
    client.on("message", (topic, payload, packet) => {
        const body = payload.length ? JSON.parse(payload.toString()) : null;
        seen.push({ topic, body, retain: packet.retain });
        routes.filter((r) => r.pattern.test(topic)).forEach((r) => r.reply(topic, body));
    });
    return {
        seen,
        on: (pattern, reply) => routes.push({ pattern, reply }),
        publish: (topic, body, options = {}) => client.publishAsync(topic, JSON.stringify(body), { qos: 1, ...options }),
        end: () => client.endAsync(),
    };
}

/** The flow's broker and config nodes (the prefix `vpp`). */
function baseFlow(port, extra = {}) {
    return [
        { id: "broker", type: "mqtt-broker", broker: "127.0.0.1", port: String(port), clientid: "", protocolVersion: "4",
            autoConnect: true, keepalive: "60", cleansession: true },
        { id: "bridge", type: "semookii-bridge", broker: "broker", prefix: "vpp", ...extra },
    ];
}

/** The flow on one tab, so a Catch node there sees its nodes' errors. */
function onTab(flow) {
    return [{ id: "tab", type: "tab", label: "spec" }, ...flow.map((n) => (n.type.startsWith("mqtt-broker") ||
        n.type === "semookii-bridge" ? n : { x: 0, y: 0, ...n, z: "tab" }))];
}

/** Resolve once `node` shows a connected status (the broker node's own green dot). */
function connected(node) {
    return new Promise((resolve) => {
        const check = () => (node.bridge && node.bridge.link && node.bridge.link.connected ? resolve() : setTimeout(check, 20));
        check();
    });
}

/** Wait until `predicate()` is true (polling), or fail after `ms`. */
async function until(predicate, ms = 3000) {
    const end = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > end) {
            throw new Error("timed out waiting");
        }
        await new Promise((r) => setTimeout(r, 20));
    }
}

module.exports = { NODES, baseFlow, connected, fakeBridge, helper, onTab, startBroker, until };
