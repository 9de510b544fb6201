"use strict";
// semookii-request: the request on its topic with a transaction, answers matched to requests, errors with codes.

const assert = require("assert");
const { until } = require("./support");
const { bench } = require("./flow");

describe("semookii-request", function () {
    this.timeout(10000);
    const load = bench();

    it("matches answers to requests by transaction, even out of order", async () => {
        const { node, got, bridge } = await load({ type: "semookii-request", op: "inverter/list", timeout: 2 });
        const asked = [];
        bridge.on(/^vpp\/bridge\/request\/inverter\/list$/, (topic, body) => {
            asked.push(body);
            if (asked.length === 2) { // answer the second first
                for (const req of [asked[1], asked[0]]) {
                    bridge.publish("vpp/bridge/response/inverter/list", { status: "ok", error: null,
                        transaction: req.transaction, data: { total: 1, items: [{ group_id: req.group_id }] } });
                }
            }
        });
        node.receive({ payload: { group_id: "1" }, tag: "one" });
        node.receive({ payload: "{\"group_id\": \"2\"}", tag: "two" });
        await until(() => got.outs[0].length === 2);
        const byTag = Object.fromEntries(got.outs[0].map((m) => [m.tag, m.payload.items[0].group_id]));
        assert.deepStrictEqual(byTag, { one: "1", two: "2" });
        assert.notStrictEqual(asked[0].transaction, asked[1].transaction);
    });

    it("ends an error answer with an error carrying the bridge's code", async () => {
        const { node, got, bridge } = await load({ type: "semookii-request", op: "group/add", timeout: 2 });
        bridge.on(/request\/group\/add$/, (topic, body) => bridge.publish("vpp/bridge/response/group/add", {
            status: "error", data: null, transaction: body.transaction,
            error: { code: "not_allowed", message: "read-only" } }));
        node.receive({ payload: { name: "new" } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "not_allowed");
        assert.deepStrictEqual(got.outs[0], []);
    });

    it("takes the op from msg.op, refusing an unknown one before publishing", async () => {
        const { node, got, bridge } = await load({ type: "semookii-request", op: "msg", timeout: 2 });
        bridge.on(/request\/group\/list$/, (topic, body) => bridge.publish("vpp/bridge/response/group/list", {
            status: "ok", error: null, transaction: body.transaction, data: { total: 0, items: [] } }));
        node.receive({ op: "group/drop" });
        node.receive({ op: "group/list" });
        await until(() => got.caught.length === 1 && got.outs[0].length === 1);
        assert.strictEqual(got.caught[0].error.code, "unknown_op");
        assert.deepStrictEqual(bridge.seen.filter((m) => m.topic.includes("group/drop")), []);
    });

    it("fails with no_answer when the bridge does not answer in time", async () => {
        const { node, got } = await load({ type: "semookii-request", op: "group/list", timeout: 0.3 });
        node.receive({});
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "no_answer");
    });
});
