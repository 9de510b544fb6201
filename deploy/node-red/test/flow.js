"use strict";
// One palette node under test, wired to helper nodes on each output and to a Catch node, against the fake bridge.

const { NODES, baseFlow, connected, fakeBridge, helper, onTab, startBroker } = require("./support");

/** Mocha hooks for a spec file: a broker for the file, a Node-RED test server per test. Returns `load`. */
function bench() {
    const state = { broker: null, bridge: null };
    before(async () => {
        state.broker = await startBroker();
    });
    after(() => state.broker.stop());
    beforeEach((done) => {
        helper.startServer(done);
    });
    afterEach(async () => {
        await helper.unload();
        await new Promise((r) => helper.stopServer(r));
        if (state.bridge) {
            await state.bridge.end();
            state.bridge = null;
        }
    });

    /** Load node `spec` (id "under") with `outputs` helper nodes and a catch; returns what each received. */
    async function load(spec, outputs = 1, config = {}) {
        state.bridge = await fakeBridge(state.broker.port);
        const outs = Array.from({ length: outputs }, (_, i) => `out${i}`);
        const flow = [...baseFlow(state.broker.port, config), { id: "under", bridge: "bridge", wires: outs.map((o) => [o]),
            ...spec }, ...outs.map((id) => ({ id, type: "helper" })),
        { id: "catch", type: "catch", scope: ["under"], wires: [["caught"]] }, { id: "caught", type: "helper" }];
        await helper.load(Object.values(NODES), onTab(flow));
        const node = helper.getNode("under");
        const got = { caught: [], statuses: [], outs: outs.map(() => []) };
        outs.forEach((id, i) => helper.getNode(id).on("input", (msg) => got.outs[i].push(msg)));
        helper.getNode("caught").on("input", (msg) => got.caught.push(msg));
        node.on("call:status", (call) => got.statuses.push(call.args[0]));
        if (node.bridge && node.bridge.link) {
            await connected(node);
        }
        return { node, got, bridge: state.bridge };
    }

    return load;
}

module.exports = { bench };
