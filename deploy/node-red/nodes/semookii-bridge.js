"use strict";
// The `semookii-bridge` config node: which broker (Node-RED's own mqtt-broker node), the bridge's topic prefix,
// and optionally its status page. The editor's group and inverter pickers ask the bridge through it.

const { Link } = require("./lib/link");
const { PaletteError, validPrefix } = require("./lib/protocol");

const PICKER_SECONDS = 30;
const PICKER_CACHE_MS = 10 * 60 * 1000; // the lists cost API calls: at most one of each per 10 minutes

module.exports = function (RED) {
    function SemookiiBridgeNode(config) {
        RED.nodes.createNode(this, config);
        this.name = config.name;
        this.prefix = (config.prefix || "vpp").trim();
        this.statusUrl = (config.statusUrl || "").trim();
        this.pickerCache = new Map();
        this.broker = RED.nodes.getNode(config.broker);
        if (!validPrefix(this.prefix)) {
            this.error(`invalid topic prefix ${JSON.stringify(this.prefix)}: no wildcards, no leading or trailing /`);
            this.link = null;
        } else if (!this.broker) {
            this.error("no MQTT broker configured: choose one in the semookii-bridge node");
            this.link = null;
        } else {
            this.link = new Link(this.broker, this);
        }
        this.on("close", (done) => {
            if (this.link) {
                this.link.close();
                if (this.pickerUser) {
                    this.link.deregister(this.pickerUser, done);
                    return;
                }
            }
            done();
        });
    }

    /** The Link, or a clear error when the config node is incomplete. */
    SemookiiBridgeNode.prototype.use = function () {
        if (!this.link) {
            throw new PaletteError("not_configured", "the semookii-bridge config node has no broker or a bad prefix");
        }
        return this.link;
    };

    /** A management list for the editor's pickers, cached; the config node joins the broker's users first. */
    SemookiiBridgeNode.prototype.pick = async function (op, body, fresh) {
        const link = this.use();
        if (!this.pickerUser) {
            this.pickerUser = { id: `${this.id}:picker`, status: () => {} };
            link.register(this.pickerUser);
        }
        const key = `${op} ${JSON.stringify(body)}`;
        const cached = this.pickerCache.get(key);
        if (!fresh && cached && Date.now() - cached.at < PICKER_CACHE_MS) {
            return cached.data;
        }
        const data = await link.request(this.prefix, op, { ...body, all: true }, PICKER_SECONDS);
        this.pickerCache.set(key, { at: Date.now(), data });
        return data;
    };

    RED.nodes.registerType("semookii-bridge", SemookiiBridgeNode, {
        credentials: { statusToken: { type: "password" } },
    });

    const canRead = RED.auth.needsPermission("semookii-bridge.read");

    /** Answer a picker request: 404 for a config node not deployed yet, 502 with the bridge's code otherwise. */
    async function answer(req, res, op, body, shape) {
        const node = RED.nodes.getNode(req.params.id);
        if (!node || node.type !== "semookii-bridge") {
            res.status(404).json({ code: "not_deployed", message: "deploy the semookii-bridge config node first" });
            return;
        }
        try {
            const data = await node.pick(op, body, req.query.fresh === "1");
            res.json((data.items || []).map(shape));
        } catch (err) {
            res.status(502).json({ code: err.code || "error", message: err.message });
        }
    }

    RED.httpAdmin.get("/semookii-bridge/:id/groups", canRead, (req, res) => {
        answer(req, res, "group/list", {}, (g) => ({ id: g.id, name: g.name, device_count: g.device_count }));
    });

    RED.httpAdmin.get("/semookii-bridge/:id/inverters", canRead, (req, res) => {
        const group = String(req.query.group_id || "");
        if (!/^[0-9]{1,25}$/.test(group)) {
            res.status(400).json({ code: "validation_error", message: "group_id: 1 to 25 digits" });
            return;
        }
        answer(req, res, "inverter/list", { group_id: group }, (i) => ({
            sn: i.inverter_sn, wifi_sn: i.wifi_sn, group_id: i.group_id, rate_power: i.rate_power,
        }));
    });

    RED.httpAdmin.get("/semookii-bridge/:id/status", canRead, async (req, res) => {
        const node = RED.nodes.getNode(req.params.id);
        if (!node || node.type !== "semookii-bridge" || !node.statusUrl) {
            res.status(404).json({ code: "not_configured", message: "no status page URL in a deployed config node" });
            return;
        }
        try {
            res.json(await statusOf(node));
        } catch (err) {
            res.status(502).json({ code: err.code || "error", message: err.message });
        }
    });

    /** The status page's budget and instance, read with the token on the server side (never sent to the editor). */
    async function statusOf(node) {
        const token = node.credentials && node.credentials.statusToken;
        const url = new URL("status.json", node.statusUrl.endsWith("/") ? node.statusUrl : `${node.statusUrl}/`);
        const reply = await fetch(url, {
            headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(5000),
        });
        if (!reply.ok) {
            throw new PaletteError(reply.status === 401 ? "unauthorized" : "http_error",
                `${url} answered HTTP ${reply.status}${reply.status === 401 ? ": set the status page token" : ""}`);
        }
        const body = await reply.json();
        return { bridge: body.bridge || null, ready: Boolean(body.ready), budget: body.budget || null };
    }
};
