"use strict";
// The bridge's MQTT interface as the palette needs it (docs/mqtt-interface.md): topics, targets, the safety
// lane's types, statuses and how each is shown. Plain functions, no Node-RED, so the specs test them directly.

const crypto = require("crypto");

const TERMINAL = new Set(["completed", "partial", "rejected", "superseded", "expired", "failed", "unknown"]);
const IN_PROGRESS = new Set(["queued", "accepted", "dispatched"]);
const KINDS = new Set(["group", "inverter", "batch"]);
const GROUP_ID = /^[0-9]{1,25}$/;
const SERIAL = /^[A-Za-z0-9_.-]{1,64}$/;
const OPS = [
    "group/add", "group/rename", "group/remove", "group/list", "group/search",
    "inverter/add", "inverter/remove", "inverter/replace", "inverter/list", "inverter/search",
    "command/query", "task/result", "device/bind",
];

/** An error the nodes raise: a stable `code` beside the human message, as the bridge's own errors. */
class PaletteError extends Error {
    constructor(code, message) {
        super(message);
        this.code = code;
    }
}

/** Whether a topic prefix is one the bridge can have (`mqtt.prefix`): not empty, no wildcard, no slash at
 * either end. */
function validPrefix(prefix) {
    return typeof prefix === "string" && prefix.length > 0 && !/[#+]/.test(prefix) &&
        !prefix.startsWith("/") && !prefix.endsWith("/");
}

/** `{kind, id}` checked as the bridge checks a topic: a group id of 1-25 digits, an inverter serial of 1-64 of
 * `A-Z a-z 0-9 _ . -`, a batch without id (its serials go in the command's `sns`). */
function parseTarget(target) {
    if (!target || typeof target !== "object") {
        throw new PaletteError("invalid_target", "no target: set one in the node or send msg.target {kind, id}");
    }
    const kind = target.kind;
    if (!KINDS.has(kind)) {
        throw new PaletteError("invalid_target", `target kind must be group, inverter or batch, not ${JSON.stringify(kind)}`);
    }
    if (kind === "batch") {
        return { kind, id: null };
    }
    if (typeof target.id === "number" && !Number.isSafeInteger(target.id)) {
        // A 19-digit group id as a number was already rounded (JavaScript keeps 15-16 digits): sending it would
        // command another group, or none.
        throw new PaletteError("invalid_target", `${kind} id ${target.id} is too long for a number and was rounded: ` +
            "send ids as strings");
    }
    const id = typeof target.id === "number" ? String(target.id) : target.id;
    const pattern = kind === "group" ? GROUP_ID : SERIAL;
    if (typeof id !== "string" || !pattern.test(id)) {
        const what = kind === "group" ? "1 to 25 digits (as a string)" : "1 to 64 of A-Z a-z 0-9 _ . -";
        throw new PaletteError("invalid_target", `${kind} id must be ${what}, not ${JSON.stringify(target.id)}`);
    }
    return { kind, id };
}

/** The target's topic base under the prefix: `<prefix>/group/<id>`, `<prefix>/inverter/<sn>`, `<prefix>/batch`. */
function targetBase(prefix, target) {
    return target.kind === "batch" ? `${prefix}/batch` : `${prefix}/${target.kind}/${target.id}`;
}

/** Where a command goes: the ordinary topic, or the safety lane's. */
function commandTopic(prefix, target, safety) {
    return `${targetBase(safety ? `${prefix}/safety` : prefix, target)}/set`;
}

const stateTopic = (prefix, target) => `${targetBase(prefix, target)}/state`;

function planTopic(prefix, target, suffix) {
    if (target.kind === "batch") {
        throw new PaletteError("invalid_target", "a plan is held per group or inverter, not for a batch");
    }
    return `${targetBase(prefix, target)}/plan/${suffix}`;
}

/** Whether a command is one the safety lane takes: a stop, `exit_remote_control`, or a switch-off. */
function isSafetyCommand(command) {
    if (!command || typeof command !== "object") {
        return false;
    }
    return (command.type === "manual" && command.action === "stop") || command.type === "exit_remote_control" ||
        (command.type === "system_switch" && command.on === false);
}

/** 32 hex digits, like the ids the bridge makes itself. */
const newId = () => crypto.randomBytes(16).toString("hex");

/** A command state's outcome: `ok` (completed), `pending` (not final), `neutral` (superseded: a newer command
 * took the target over), `failure` (every other final status) or `unrecognised` (a status of a newer interface). */
function outcome(state) {
    if (IN_PROGRESS.has(state.status)) {
        return "pending";
    }
    if (!TERMINAL.has(state.status)) {
        return "unrecognised";
    }
    if (state.status === "completed") {
        return "ok";
    }
    return state.status === "superseded" ? "neutral" : "failure";
}

/** The node status a command state shows: queued a blue ring, accepted/dispatched a yellow dot, completed a green
 * dot, superseded a grey ring, any other final status a red ring with its error code. */
function commandStatus(state) {
    const code = state.error && state.error.code ? `: ${state.error.code}` : "";
    switch (outcome(state)) {
        case "ok":
            return { fill: "green", shape: "dot", text: `completed${code ? " (dry run)" : ""}` };
        case "neutral":
            return { fill: "grey", shape: "ring", text: `superseded${code}` };
        case "failure":
            return { fill: "red", shape: "ring", text: `${state.status}${code}` };
        case "unrecognised":
            return { fill: "yellow", shape: "ring", text: `${state.status}? (update the palette)` };
        default:
            return state.status === "queued"
                ? { fill: "blue", shape: "ring", text: "queued" }
                : { fill: "yellow", shape: "dot", text: String(state.status) };
    }
}

/** The node status a plan state shows. */
function planStatus(state) {
    const counts = `sent ${state.sent ?? 0}, missed ${state.missed ?? 0}`;
    switch (state.status) {
        case "active": {
            const fill = state.warning ? "yellow" : "blue";
            return { fill, shape: "dot", text: `active: interval ${state.interval ?? "-"}, ${counts}` };
        }
        case "finished":
            return { fill: state.missed ? "yellow" : "green", shape: "dot", text: `finished: ${counts}` };
        case "rejected":
        case "suspended":
            return { fill: "red", shape: "ring", text: `${state.status}: ${state.error ? state.error.code : "?"}` };
        default:
            return { fill: "grey", shape: "ring", text: String(state.status) };
    }
}

/** A JSON payload: an object as it is, a string or Buffer parsed; anything else refused with `invalid_json`. */
function asObject(payload, what) {
    let value = payload;
    if (Buffer.isBuffer(value)) {
        value = value.toString("utf8");
    }
    if (typeof value === "string") {
        try {
            value = JSON.parse(value);
        } catch (err) {
            throw new PaletteError("invalid_json", `${what} is not JSON: ${err.message}`);
        }
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) {
        throw new PaletteError("invalid_json", `${what} must be a JSON object`);
    }
    return value;
}

/** The command a message asks for: its payload when that is an object (or JSON text of one), else the node's
 * own command (an inject's timestamp then sends it), else `validation_error`. */
function commandOf(payload, fixed) {
    const text = Buffer.isBuffer(payload) ? payload.toString("utf8") : payload;
    const object = text && typeof text === "object" && !Array.isArray(text);
    if (object || (typeof text === "string" && text.trim().startsWith("{"))) {
        return asObject(text, "msg.payload (the command)");
    }
    if (fixed) {
        return fixed;
    }
    throw new PaletteError("validation_error", "msg.payload must be a command object (or set a command in the node)");
}

/** A setting in seconds: a positive number, else the default. */
function seconds(value, fallback) {
    const n = Number(value);
    return Number.isFinite(n) && n > 0 ? n : fallback;
}

module.exports = {
    OPS, PaletteError, TERMINAL, asObject, commandOf, commandStatus, commandTopic, isSafetyCommand, newId,
    outcome, parseTarget, planStatus, planTopic, seconds, stateTopic, targetBase, validPrefix,
};
