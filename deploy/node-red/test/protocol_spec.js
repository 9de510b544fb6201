"use strict";
// The palette's plain rules: targets and topics as the bridge checks them, the safety types, statuses shown,
// and plan input from a plan, rows or CSV.

const assert = require("assert");
const P = require("../nodes/lib/protocol");
const { toPlan } = require("../nodes/lib/plan-input");

describe("protocol", () => {
    it("checks targets as the bridge checks its topics", () => {
        assert.deepStrictEqual(P.parseTarget({ kind: "group", id: 1028902640000737 }), { kind: "group", id: "1028902640000737" });
        assert.deepStrictEqual(P.parseTarget({ kind: "batch", id: "ignored" }), { kind: "batch", id: null });
        for (const bad of [null, { kind: "site", id: "1" }, { kind: "group", id: "1".repeat(26) },
            { kind: "group", id: "12a" }, { kind: "inverter", id: "a/b" }, { kind: "inverter", id: "" }]) {
            assert.throws(() => P.parseTarget(bad), (err) => err.code === "invalid_target");
        }
    });

    it("refuses an id given as a number too long to be exact, instead of sending to a rounded one", () => {
        const rounded = JSON.parse('{"kind": "group", "id": 1028902640000737745}');
        assert.throws(() => P.parseTarget(rounded), (err) => err.code === "invalid_target" && /as strings/.test(err.message));
    });

    it("puts commands on the ordinary or the safety topic, states and plans beside them", () => {
        const group = { kind: "group", id: "7" };
        assert.strictEqual(P.commandTopic("vpp", group, false), "vpp/group/7/set");
        assert.strictEqual(P.commandTopic("plant/a", group, true), "plant/a/safety/group/7/set");
        assert.strictEqual(P.commandTopic("vpp", { kind: "batch", id: null }, true), "vpp/safety/batch/set");
        assert.strictEqual(P.stateTopic("vpp", { kind: "inverter", id: "H1" }), "vpp/inverter/H1/state");
        assert.strictEqual(P.planTopic("vpp", group, "set"), "vpp/group/7/plan/set");
    });

    it("knows the safety lane's types: a stop, exit_remote_control, a switch-off", () => {
        assert.ok(P.isSafetyCommand({ type: "manual", action: "stop" }));
        assert.ok(P.isSafetyCommand({ type: "exit_remote_control" }));
        assert.ok(P.isSafetyCommand({ type: "system_switch", on: false }));
        for (const other of [{ type: "manual", action: "force_charge" }, { type: "system_switch", on: true },
            { type: "system_switch" }, { type: "power_control", active_power: 0 }, null]) {
            assert.ok(!P.isSafetyCommand(other));
        }
    });

    it("shows every final status but completed and superseded as a failure with its code", () => {
        for (const status of ["partial", "rejected", "expired", "failed", "unknown"]) {
            assert.strictEqual(P.outcome({ status }), "failure");
            assert.deepStrictEqual(P.commandStatus({ status, error: { code: "c" } }), { fill: "red", shape: "ring", text: `${status}: c` });
        }
        assert.strictEqual(P.outcome({ status: "dispatched" }), "pending");
        assert.strictEqual(P.outcome({ status: "paused" }), "unrecognised");
        assert.strictEqual(P.commandStatus({ status: "paused" }).fill, "yellow");
        assert.deepStrictEqual(P.commandStatus({ status: "completed", error: { code: "dry_run" } }),
            { fill: "green", shape: "dot", text: "completed (dry run)" });
    });

    it("accepts a command valid only as an object or JSON object text, else the node's own", () => {
        assert.deepStrictEqual(P.commandOf(Buffer.from("{\"type\": \"backup\"}"), null), { type: "backup" });
        assert.deepStrictEqual(P.commandOf(1234, { type: "manual", action: "stop" }), { type: "manual", action: "stop" });
        assert.throws(() => P.commandOf([1], null), (err) => err.code === "validation_error");
        assert.throws(() => P.commandOf("{x", null), (err) => err.code === "invalid_json");
    });

    it("refuses a prefix the bridge cannot have", () => {
        assert.ok(P.validPrefix("vpp") && P.validPrefix("site/a"));
        for (const bad of ["", "vpp/#", "a+b", "/vpp", "vpp/", 7]) {
            assert.ok(!P.validPrefix(bad), String(bad));
        }
    });
});

describe("plan input", () => {
    it("reads CSV with a type column, booleans and empty cells left out", () => {
        const plan = toPlan("# day plan\nstart,end,type,target_soc,charge_power,update\r\n" +
            "2027-01-01T10:00:00Z,2027-01-01T11:00:00Z,soc_control,40,-3000,\n", "fallback");
        assert.deepStrictEqual(plan, { plan_id: "fallback", intervals: [{ start: "2027-01-01T10:00:00Z",
            end: "2027-01-01T11:00:00Z", command: { type: "soc_control", target_soc: 40, charge_power: -3000 } }] });
    });

    it("names the row of a CSV mistake, counting the header as row 1", () => {
        const cases = [["start,end,active_power\n2027-01-01T10:00:00Z,2027-01-01T11:00:00Z\n", /^row 2: 2 cells/],
            ["start,stop,active_power\n2027-01-01T10:00:00Z,2027-01-01T11:00:00Z,5\n", /header must begin start,end/], ["start,end,active_power\n", /at least one row/],
            ["start,end,active_power\n2027-01-01T10:00:00,2027-01-01T11:00:00Z,5\n", /^row 2: start must be an RFC 3339/]];
        for (const [text, message] of cases) {
            assert.throws(() => toPlan(text, "p"), (err) => err.code === "validation_error" && message.test(err.message));
        }
    });

    it("keeps a plan's own plan_id and refuses one without intervals", () => {
        assert.strictEqual(toPlan({ plan_id: "own", intervals: [] }, "fallback").plan_id, "own");
        assert.strictEqual(toPlan("{\"intervals\": []}", "fallback").plan_id, "fallback");
        assert.throws(() => toPlan({ plan_id: "x" }, "f"), /intervals/);
        assert.throws(() => toPlan([{ start: "2027-01-01T10:00:00Z", end: "2027-01-01T11:00:00Z" }], "f"), /^PaletteError: row 1|row 1/);
    });
});

describe("link", () => {
    const { Link } = require("../nodes/lib/link");

    /** Link over a scripted broker node: `deliver(topic, text)` plays a message on every subscription matching. */
    function scripted() {
        const subs = new Map();
        const broker = { connected: true, subscribe: (topic, options, callback) => subs.set(topic, callback),
            unsubscribe: (topic) => subs.delete(topic), register() {}, deregister() {} };
        const link = new Link(broker, { id: "cfg", warn() {} });
        return { link, subs, play: (sub, topic, text) => subs.get(sub)(topic, Buffer.from(text), { retain: false }) };
    }

    it("hands a message on once when the broker delivers one copy per matching subscription (MQTT 3.1.1)", () => {
        const { link, play } = scripted();
        const seen = [];
        link.subscribe("vpp/group/1/state", (topic, state) => seen.push(state.ts));
        const text = JSON.stringify({ request_id: "r", status: "queued", ts: "2026-12-06T10:00:00.001Z" });
        play("vpp/group/1/state", "vpp/group/1/state", text);
        play("vpp/group/1/state", "vpp/group/1/state", text);
        play("vpp/group/1/state", "vpp/group/1/state", text.replace(".001Z", ".002Z"));
        assert.deepStrictEqual(seen, ["2026-12-06T10:00:00.001Z", "2026-12-06T10:00:00.002Z"]);
    });

    it("shares one broker subscription per topic and drops it with its last user", () => {
        const { link, subs } = scripted();
        const stopA = link.subscribe("t", () => {});
        const stopB = link.subscribe("t", () => {});
        assert.deepStrictEqual([...subs.keys()], ["t"]);
        stopA();
        assert.ok(subs.has("t"));
        stopB();
        assert.ok(!subs.has("t"));
    });

    it("ignores a message that is not a JSON object, and a cleared retained one", () => {
        const { link, play } = scripted();
        const seen = [];
        link.subscribe("t", (topic, value) => seen.push(value));
        play("t", "t", "not json");
        play("t", "t", "");
        play("t", "t", "[1]");
        assert.deepStrictEqual(seen, []);
    });
});
