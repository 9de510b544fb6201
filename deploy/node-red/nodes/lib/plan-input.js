"use strict";
// What the plan node accepts (docs/node-red.md): a plan `{plan_id, intervals}`, an array of `{start, end,
// command}` rows, or CSV text with a header `start,end,...` whose other columns are the command's fields
// (`type` defaults to power_control). Errors name the row, as the bridge names the interval.

const { PaletteError, asObject } = require("./protocol");

const RFC3339 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** A cell as JSON would have it: a number, true/false, else the text. */
function cell(text) {
    if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
        return Number(text);
    }
    if (text === "true" || text === "false") {
        return text === "true";
    }
    return text;
}

function checkTime(value, row, field) {
    if (typeof value !== "string" || !RFC3339.test(value.trim())) {
        throw new PaletteError("validation_error",
            `row ${row}: ${field} must be an RFC 3339 time with a zone (2026-12-06T17:00:00Z), not ${JSON.stringify(value)}`);
    }
    return value.trim();
}

/** CSV rows into intervals; row numbers count the header as row 1. */
function fromCsv(text) {
    const lines = text.split(/\r?\n/).map((line, i) => [i + 1, line.trim()]).filter(([, l]) => l && !l.startsWith("#"));
    if (lines.length < 2) {
        throw new PaletteError("validation_error", "CSV needs a header row (start,end,...) and at least one row");
    }
    const header = lines[0][1].split(",").map((h) => h.trim());
    if (header[0] !== "start" || header[1] !== "end" || header.length < 3) {
        throw new PaletteError("validation_error", "CSV header must begin start,end and name the command's fields");
    }
    return lines.slice(1).map(([row, line]) => {
        const cells = line.split(",").map((c) => c.trim());
        if (cells.length !== header.length) {
            throw new PaletteError("validation_error", `row ${row}: ${cells.length} cells, the header has ${header.length}`);
        }
        const command = { type: "power_control" };
        header.slice(2).forEach((name, i) => {
            if (cells[i + 2] !== "") {
                command[name] = cell(cells[i + 2]);
            }
        });
        if (command.type === "power_control" && typeof command.active_power !== "number") {
            throw new PaletteError("validation_error", `row ${row}: active_power must be a number of watts`);
        }
        return { start: checkTime(cells[0], row, "start"), end: checkTime(cells[1], row, "end"), command };
    });
}

/** Rows `{start, end, command}` checked for shape; the bridge checks the rest (order, horizon, limits). */
function fromRows(rows) {
    return rows.map((row, i) => {
        if (!row || typeof row !== "object" || typeof row.command !== "object" || row.command === null) {
            throw new PaletteError("validation_error", `row ${i + 1}: needs start, end and a command object`);
        }
        return { start: checkTime(row.start, i + 1, "start"), end: checkTime(row.end, i + 1, "end"), command: row.command };
    });
}

/** The plan to publish: `plan_id` from the plan, else `fallbackId`; an empty intervals list cancels. */
function toPlan(payload, fallbackId) {
    let value = Buffer.isBuffer(payload) ? payload.toString("utf8") : payload;
    if (typeof value === "string" && !/^\s*[[{]/.test(value)) {
        return { plan_id: fallbackId, intervals: fromCsv(value) };
    }
    if (typeof value === "string" && /^\s*\[/.test(value)) {
        try {
            value = JSON.parse(value);
        } catch (err) {
            throw new PaletteError("invalid_json", `the plan is not JSON: ${err.message}`);
        }
    }
    if (Array.isArray(value)) {
        return { plan_id: fallbackId, intervals: fromRows(value) };
    }
    value = asObject(value, "the plan");
    if (!Array.isArray(value.intervals)) {
        throw new PaletteError("validation_error", "a plan needs `intervals`: a list (empty to cancel the plan)");
    }
    const planId = value.plan_id === undefined ? fallbackId : value.plan_id;
    if (typeof planId !== "string" || planId.length === 0) {
        throw new PaletteError("validation_error", "plan_id must be a non-empty string");
    }
    return { ...value, plan_id: planId };
}

module.exports = { toPlan };
