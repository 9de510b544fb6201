"use strict";
// semookii-bridge (config): the editor's pickers through the bridge, cached; the status page read with its token.

const assert = require("assert");
const http = require("http");
const { helper, until } = require("./support");
const { bench } = require("./flow");

describe("semookii-bridge", function () {
    this.timeout(10000);
    const load = bench();

    function lists(bridge) {
        bridge.on(/request\/group\/list$/, (topic, body) => bridge.publish("vpp/bridge/response/group/list", {
            status: "ok", error: null, transaction: body.transaction,
            data: { total: 1, items: [{ id: "1028902640000737745", name: "Harbour street", device_count: 3 }] } }));
        bridge.on(/request\/inverter\/list$/, (topic, body) => bridge.publish("vpp/bridge/response/inverter/list", {
            status: "ok", error: null, transaction: body.transaction, data: { total: 1, items: [{ id: "9",
                group_id: body.group_id, inverter_sn: "H475A", wifi_sn: "SW1", rate_power: 5000 }] } }));
    }

    it("fills the group picker with names from group/list, asking the bridge once per ten minutes", async () => {
        const { bridge } = await load({ type: "semookii-request", op: "group/list" });
        lists(bridge);
        const first = await helper.request().get("/semookii-bridge/bridge/groups").expect(200);
        assert.deepStrictEqual(first.body, [{ id: "1028902640000737745", name: "Harbour street", device_count: 3 }]);
        await helper.request().get("/semookii-bridge/bridge/groups").expect(200);
        const asked = () => bridge.seen.filter((m) => m.topic === "vpp/bridge/request/group/list");
        assert.strictEqual(asked().length, 1);
        assert.strictEqual(asked()[0].body.all, true);
        await helper.request().get("/semookii-bridge/bridge/groups?fresh=1").expect(200);
        await until(() => asked().length === 2);
    });

    it("fills the inverter picker for a group, and refuses a bad group id", async () => {
        const { bridge } = await load({ type: "semookii-request", op: "group/list" });
        lists(bridge);
        const reply = await helper.request().get("/semookii-bridge/bridge/inverters?group_id=77").expect(200);
        assert.deepStrictEqual(reply.body, [{ sn: "H475A", wifi_sn: "SW1", group_id: "77", rate_power: 5000 }]);
        await helper.request().get("/semookii-bridge/bridge/inverters?group_id=x").expect(400);
    });

    it("answers 404 for a config node not deployed and 502 with the code when the bridge is silent", async () => {
        await load({ type: "semookii-request", op: "group/list" });
        const missing = await helper.request().get("/semookii-bridge/nope/groups").expect(404);
        assert.strictEqual(missing.body.code, "not_deployed");
        helper.getNode("bridge").pick = async () => {
            const { PaletteError } = require("../nodes/lib/protocol");
            throw new PaletteError("no_answer", "no answer to group/list within 30 s");
        };
        const silent = await helper.request().get("/semookii-bridge/bridge/groups").expect(502);
        assert.strictEqual(silent.body.code, "no_answer");
    });

    it("reads the status page with its token on the server side", async () => {
        const server = http.createServer((req, res) => {
            const ok = req.headers.authorization === "Bearer page-token";
            res.writeHead(ok ? 200 : 401, { "Content-Type": "application/json" });
            res.end(JSON.stringify(ok ? { bridge: { version: "0.1.0" }, ready: true, budget: { remaining: 9 } } : {}));
        });
        await new Promise((r) => server.listen(0, "127.0.0.1", r));
        const url = `http://127.0.0.1:${server.address().port}/`;
        try {
            await load({ type: "semookii-request", op: "group/list" }, 1, { statusUrl: url });
            helper.getNode("bridge").credentials = { statusToken: "page-token" };
            const reply = await helper.request().get("/semookii-bridge/bridge/status").expect(200);
            assert.deepStrictEqual(reply.body, { bridge: { version: "0.1.0" }, ready: true, budget: { remaining: 9 } });
            helper.getNode("bridge").credentials = { statusToken: "wrong" };
            const refused = await helper.request().get("/semookii-bridge/bridge/status").expect(502);
            assert.strictEqual(refused.body.code, "unauthorized");
        } finally {
            server.close();
        }
    });

    it("refuses a topic prefix with a wildcard: the nodes using it say so and send nothing", async () => {
        const { node, got, bridge } = await load({ type: "semookii-command", targetKind: "group", targetId: "1" }, 2,
            { prefix: "vpp/#" });
        node.receive({ payload: { type: "manual", action: "stop" } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "not_configured");
        assert.deepStrictEqual(bridge.seen, []);
    });
});
