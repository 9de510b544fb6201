"""Do the tests catch the bugs they claim to? Plants one plausible bug at a time in a copy of the package and
runs the test README names for that guarantee: it must fail with the bug and pass without it.

    .venv/bin/python tests/planted_bugs.py            # all (about 3 minutes)
    .venv/bin/python tests/planted_bugs.py ack-order  # one, by name

The tests run in the copy and import the package from it (PYTHONPATH), so bridges the tests start as
processes run the planted bug too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    module: str
    edits: tuple[tuple[str, str], ...]
    test: str


BUGS = (
    Bug("plan-step-early", "control/plan_runner.py",
        (("while k < len(program.steps) and program.steps[k].interval.start <= now:",
          "while k < len(program.steps) and program.steps[k].interval.start <= now + 1:"),
         ("            if self._due(program, record) <= now:", "            if self._due(program, record) <= now + 1:")),
        "tests/test_plans.py::test_each_step_is_issued_at_its_start_and_not_before"),
    Bug("plan-missed-sent-late", "control/plan_runner.py",
        (("            if now < deadline(step, self.grace):", "            if True:"),),
        "tests/test_plans_live.py::test_an_interval_past_its_grace_is_missed_and_never_sent"),
    Bug("plan-resent-after-restart", "control/plan_runner.py",
        (("                self._programs[program.target.key] = (program, record)",
          "                self._programs[program.target.key] = (program, msgspec.structs.replace(record, next_index=0))"),),
        "tests/test_plans.py::test_a_restart_goes_on_from_the_journal"),
    Bug("plan-stop-not-suspending", "bridge.py",
        (("            if route.safety:\n                self.desk.stopped(target, command)\n", ""),),
        "tests/test_plans_live.py::test_a_stop_on_the_safety_lane_suspends_the_plan"),
    Bug("plan-on-the-wall-clock", "bridge.py",
        (("PlanRunner(journal, config, clock,", "PlanRunner(journal, config, time.time,"),),
        "tests/test_plans_live.py::test_a_wall_clock_step_between_runs_fires_no_interval_early_or_twice"),
    Bug("plan-device-falls-back-between-intervals", "control/plans.py",
        (("        return min(grace, following.end - following.start)\n", "        return 0.0\n"),),
        "tests/test_plans.py::test_adjacent_intervals_are_bridged_and_the_last_is_held_no_longer_than_its_deadline"),
    Bug("plan-replaced-at-once", "control/plan_runner.py",
        (("            lead_in = tuple(step for step in old.steps[record.next_index :])", "            lead_in = ()"),),
        "tests/test_plans.py::test_a_new_plan_replaces_the_old_from_its_first_interval"),

    Bug("retry-after-dropped", "api/caller.py", (("self._gate.throttled(wait)", "self._gate.throttled(None)"),),
        "tests/test_bridge_rate_limit.py::test_api_429_pauses_all_calls_for_retry_after"),
    Bug("retry-after-ignored", "budget/ratelimit.py",
        (("retry_after if retry_after is not None else self.default_pause", "self.default_pause"),),
        "tests/test_bridge_rate_limit.py::test_api_429_pauses_all_calls_for_retry_after"),
    Bug("replace-new-serial-unchecked", "management/ops.py",
        (("scope=lambda r: Scope(sns=(r.new_sn,), inverter_ids=(r.id,))", "scope=lambda r: Scope(inverter_ids=(r.id,))"),),
        "tests/test_management_guards.py"),
    Bug("rename-under-read-only", "management/ops.py",
        (('"group/rename": Op(GroupRename, _group_rename, mutating=True,', '"group/rename": Op(GroupRename, _group_rename,'),),
        "tests/test_management_guards.py"),
    Bug("bind-unchecked", "management/ops.py",
        (("mutating=True, scope=lambda r: Scope(sns=tuple(r.sns))),", "mutating=True),"),),
        "tests/test_management_guards.py"),
    Bug("query-of-another-group", "management/ops.py",
        (('scope=lambda r: Scope(command_id=r.command_id)', 'scope=lambda r: Scope()'),),
        "tests/test_management_guards.py"),
    Bug("ban-log-quotes-the-api", "api/caller.py",
        (('log.error("api_banned endpoint=%s seconds=%g effect=every_call_paused", endpoint.name, seconds)',
          'log.error("api_banned endpoint=%s seconds=%g text=%s", endpoint.name, seconds, envelope.exception)'),),
        "tests/test_token_redaction.py::test_a_ban_answer_quoting_the_token_upper_cased_leaks_nowhere"),
    Bug("redaction-exact-match", "config/secret.py",
        (('return self._pattern.sub("***", text) if self._pattern is not None else text',
          'return text.replace(self._value, "***") if self._value else text'),),
        "tests/test_token_redaction.py"),
    Bug("ack-before-commit", "mqtt/link.py",
        (("""            if self._before_ack is not None:
                await self._before_ack()
            for msg in batch:
                if msg.qos > 0:
                    self._client.ack(msg.mid, msg.qos)""", """            for msg in batch:
                if msg.qos > 0:
                    self._client.ack(msg.mid, msg.qos)
            if self._before_ack is not None:
                await self._before_ack()"""),),
        "tests/test_ack_order.py"),
    Bug("ndeath-previous-bdseq", "sparkplug/edge.py",
        (('encode([Metric("bdSeq", DataType.Int64, self.bd_seq)]', 'encode([Metric("bdSeq", DataType.Int64, self.bd_seq - 1)]'),),
        "tests/test_sparkplug.py::test_each_session_s_will_carries_that_session_s_bd_seq"),
    Bug("superseded-sent", "control/dispatcher.py",
        (("            key = await self._next_key()\n            await self._slots.acquire()",
          "            key = await self._next_key()\n            chosen = self._pending.get(key)\n"
          "            await self._slots.acquire()"),
         ("            self._launch(key)\n", "            self._launch(key, chosen)\n"),
         ("    def _launch(self, key: str) -> None:\n", "    def _launch(self, key, chosen=None):\n"),
         ("            return\n        job = self._take(key)\n", "            return\n        self._take(key)\n        job = chosen\n")),
        "tests/test_dispatcher.py::test_a_newer_command_arriving_while_the_older_waits_for_its_token_replaces_it"),
    Bug("restart-with-a-full-bucket", "budget/ratelimit.py",
        (("        if state is not None:\n            self._resume(state, now, doubt)", ""),),
        "tests/test_restart.py::test_restarts_after_bursts_get_no_token_banned"),
    Bug("deadlines-on-the-process-clock", "service.py",
        (("            clock=timeline,\n", ""),),
        "tests/test_restart.py::test_deadlines_hold_when_the_wall_clock_steps_back_between_runs"),
    Bug("quota-day-goes-back", "budget/quota.py",
        (("        if now >= self._day_ends:\n", "        if now >= self._day_ends or now < self._day_ends - 90000:\n"),
         ("            if day > self._day:", "            if day != self._day:")),
        "tests/test_restart_state.py::test_a_step_back_of_two_days_does_not_start_a_fresh_count"),
    Bug("poll-without-a-token", "control/polling.py",
        (("if self.clock() >= track_until or (self.tokens is not None and not prepaid):",
          "if self.clock() >= track_until:"),),
        "tests/test_poll_window.py"),
    Bug("rebirth-unpaced", "sparkplug/edge.py",
        (("                self._rebirths.request()", "                self.birth()"),),
        "tests/test_sparkplug.py::test_a_thousand_rebirth_and_refresh_commands_do_not_amplify"),
    Bug("dcmd-unbounded", "sparkplug/devices.py", (("if len(metrics) > len(WRITABLE):", "if False:"),),
        "tests/test_sparkplug.py::test_a_dcmd_writes_each_metric_once_and_no_more_than_a_device_has"),
    Bug("no-fence", "journal/postgres.py",
        (("if fence is not None and await conn.fetchval(_FENCE, fence.epoch, fence.holder) is None:", "if False:"),),
        "tests/test_shared_journal.py::test_a_write_after_a_takeover_is_fenced_and_never_on_record"),
    Bug("takeover-before-expiry", "journal/postgres.py", (("WHERE id = 1 AND expires_at <= clock_timestamp() RETURNING epoch",
                                                   "WHERE id = 1 RETURNING epoch"),),
        "tests/test_shared_journal.py::test_a_standby_takes_over_only_once_the_lease_has_expired"),
    Bug("lease-believed-to-its-end", "journal/lease.py", (("self.margin = min(0.5, lease / 6)", "self.margin = -lease"),),
        "tests/test_shared_journal.py::test_a_leader_that_cannot_renew_gives_up_before_its_lease_ends"),
    Bug("paused-leader-lingers", "ha/standby.py", (("    os._exit(code)", "    return None"),),
        "tests/test_ha.py::test_a_paused_leader_makes_no_call_after_it_resumes"),
    Bug("flush-drops-writes-on-outage", "journal/shared.py", (("                self._restore(batch)\n", ""),),
        "tests/test_shared_journal.py::test_writes_wait_out_a_database_outage_and_none_is_lost"),
    Bug("safety-lane-reads-everything", "control/admission.py", (("if safety and not is_safety(command):", "if False:"),),
        "tests/test_safety_lane.py::test_other_command_types_on_the_safety_topics_are_refused_with_no_call"),
    Bug("safety-lane-on-the-ordinary-session", "service.py",
        (("safety = self.safety_link = self._safety_link(bridge, self.journal)\n",
          "safety = self.safety_link = self._safety_link(bridge, self.journal)\n        safety.safety = False\n"),),
        "tests/test_safety_lane.py::test_a_stop_on_the_safety_lane_overtakes_thirty_thousand_queued_setpoints"),
    # issues 23 and 24: operators see it and trust it; the first hour
    Bug("prepaid-call-ignores-a-refused-token", "api/caller.py", (("            self._gate.check(endpoint)\n", ""),),
        "tests/test_operations.py::test_a_refused_token_is_loud_costs_no_calls_and_recovers"),
    Bug("refused-token-never-rechecked", "budget/authorization.py",
        (('if doubted or auth.state == "unauthorized" or (at_start and auth.state == "unknown"):', "if doubted:"),),
        "tests/test_operations.py::test_a_refused_token_is_loud_costs_no_calls_and_recovers"),
    Bug("liveness-follows-the-cloud", "ops/observability.py", (("        alive = silent <= LIVE_AFTER\n",
        "        alive = silent <= LIVE_AFTER and self._api(self._live())[0]\n"),),
        "tests/test_operations.py::test_livez_stays_up_while_the_cloud_is_down_and_readyz_says_why"),
    Bug("junk-replaces-the-retained-state", "control/lifecycle.py",
        (('retain = not message.duplicate and status != "rejected"', "retain = not message.duplicate"),),
        "tests/test_retained_state.py"),
    Bug("shutdown-waits-for-hanging-calls", "bridge.py", (("drain_timeout: float = 1.0", "drain_timeout: float = 5.0"),),
        "tests/test_shutdown.py::test_sigterm_with_a_control_call_hanging"),
    Bug("mangled-allow-list-accepted", "config/sources.py",
        (("    if any(c in stripped for c in \"[]\\\"'\"):", "    if False:"),), "tests/test_config.py"),
    Bug("new-inverters-never-learned", "bridge.py",
        (("elif not (self._merging and self.learner.take(job)):", "elif True:"),),
        "tests/test_merging.py::test_inverters_added_after_start_are_learned_and_merged"),
    Bug("credentials-refusal-retried", "mqtt/link.py", (('failure.kind == "not_authorized"', "False"),),
        "tests/test_logs.py::test_run_names_refused_credentials_with_the_level_from_the_environment"),
    Bug("takeover-no-holdback", "control/recovery.py",
        (("            self.dispatcher.holdback.hold(job, self.clock() + self.wire_bound)\n", ""),),
        "tests/test_takeover.py::test_a_request_held_on_the_wire_lands_before_the_new_leaders_call"),
    Bug("write-not-fenced", "api/transport.py",
        (("        if not self._may_send():\n            self._transport.abort()", "        if False:\n            self._transport.abort()"),),
        "tests/test_fenced_transport.py"),
    Bug("expired-holder-not-ended", "journal/postgres.py",
        (("        await self._run(lambda conn: conn.execute(_END_EXPIRED, APPLICATION))\n", ""),),
        "tests/test_takeover.py::test_a_leader_stalled_inside_its_fence_transaction_does_not_hold_the_takeover"),
    Bug("fence-without-lock", "journal/postgres.py",
        (("expires_at > clock_timestamp() \"\n    \"FOR KEY SHARE\"\n)", "expires_at > clock_timestamp()\"\n)"),),
        "tests/test_shared_journal.py"),
    Bug("publish-refusal-ignored", "mqtt/outbox.py",
        (("        if getattr(reason, \"is_failure\", False):\n", "        if False:\n"),),
        "tests/test_deploy.py::test_a_broker_refusing_the_bridges_publishes_is_an_error_in_log_readyz_and_metrics"),
    Bug("vendor-text-only-redacted", "api/caller.py",
        (("message = self.token.vet(envelope.exception", "message = self.token.redact(envelope.exception"),),
        "tests/test_token_redaction.py::test_a_vendor_message_echoing_the_token_in_any_encoding_keeps_it_out"),
    Bug("bad-request-traceback", "ops/http_server.py",
        (('    logging.getLogger("aiohttp.server").addFilter(BAD_REQUESTS)\n', ""),),
        "tests/test_operations.py::test_malformed_http_requests_get_400_and_one_debug_line_each"),
    Bug("inverter-listing-unfiltered", "management/guard.py",
        (("        if isinstance(item, Inverter):\n", "        if False:\n"),),
        "tests/test_management_guards.py::test_no_listing_shape_shows_what_is_outside_the_allow_lists"),
    Bug("rebirth-during-rebirth-dropped", "sparkplug/pacing.py",
        (("            self._again = False\n            try:\n                await self.action()\n",
          "            try:\n                await self.action()\n            self._again = False\n"),),
        "tests/test_sparkplug_pacing.py::test_a_request_during_a_run_is_carried_out_once_after_it"),
    Bug("page-renders-html", "ops/status.js",
        (("  td.textContent = text", "  td.innerHTML = text"),),
        "tests/test_status_page.py::test_markup_in_every_field_an_outsider_controls_stays_text"),
    Bug("unset-clock-believed", "journal/timeline.py",
        (("        start = max(start, store.latest_deadline() or start)\n", ""),),
        "tests/test_restart_state.py::test_after_a_reboot_with_the_wall_clock_behind_the_journal_no_queued_command_goes_out_late"),
    Bug("heartbeat-slow-on-a-down-link", "ha/membership.py",
        (("            if self.links.looks_down():\n                return\n", ""),),
        "tests/test_fleet.py::test_a_link_going_down_is_checked_within_half_a_second_not_a_quarter_window"),
    Bug("cancelled-call-counts-as-answer", "api/caller.py",
        (('            outcome = "cancelled"  # the caller gave up (a poll\'s window): no answer came, none is proven\n', ""),),
        "tests/test_breaker.py::test_a_call_given_up_by_its_caller_is_no_answer"),
    Bug("durable-waits-behind-callbacks", "journal/shared.py",
        (("            _resolve(waiter)\n        self._due.extend(cb for gen, cb in self._after if gen <= self._flushed)\n",
          "            pass\n        self._due.extend(cb for gen, cb in self._after if gen <= self._flushed)\n"
          "        self._due.extend((lambda w=w: _resolve(w)) for w in woken)\n"),),
        "tests/test_shared_journal.py::test_durable_wakes_at_its_flush_not_behind_the_batchs_callbacks"),
    Bug("refused-write-not-retried", "api/retry.py",
        (("ConnectFailed | RateLimited | NotLeading)", "ConnectFailed | RateLimited)"),),
        "tests/test_fenced_transport.py::test_a_write_refused_while_a_late_renewal_catches_up_goes_out_once_the_lease_is_valid_again"),
    Bug("settle-all-at-once", "journal/shared.py",
        (("while self._due and time.monotonic() < until:", "while self._due:"),),
        "tests/test_shared_journal.py::test_a_large_batchs_callbacks_run_in_order_with_the_loop_turning_between_slices"),
    Bug("after-commit-jumps-the-queue", "journal/shared.py",
        (("if self._flushed >= self._written and not self._due:", "if self._flushed >= self._written:"),),
        "tests/test_shared_journal.py::test_a_large_batchs_callbacks_run_in_order_with_the_loop_turning_between_slices"),
    Bug("renewal-paced-from-its-answer", "journal/lease.py",
        (("wake = min(asked + self.lease / 3,", "wake = min(self.clock() + self.lease / 3,"),),
        "tests/test_shared_journal.py::test_a_slow_renewal_does_not_push_the_next_one_later"),
    Bug("fence-blocks-renewal", "journal/postgres.py",
        (("    \"FOR KEY SHARE\"\n)", "    \"FOR SHARE\"\n)"),),
        "tests/test_shared_journal.py::test_the_leader_renews_its_lease_while_its_own_fenced_write_is_open"),
    Bug("takeover-without-row-lock", "journal/postgres.py",
        (("                await conn.execute(_TAKE_ROW)\n", ""),),
        "tests/test_shared_journal.py::test_a_takeover_waits_for_a_fenced_write_in_progress_and_sees_it"),
    Bug("expires-at-host-clock", "service.py",
        (("wall=timeline if self._shared is not None else time.time,", "wall=time.time,"),),
        "tests/test_takeover.py::test_expires_at_follows_the_databases_clock_not_a_skewed_hosts"),
    Bug("quota-day-host-clock", "service.py",
        (("            bucket.quota.use_wall(timeline)\n", "            pass\n"),),
        "tests/test_takeover.py::test_the_quota_day_is_the_databases_not_a_skewed_hosts"),
    Bug("fleet-settings-unchecked", "ha/fleet.py",
        (("    diff = differing(me.settings, other.settings)", "    diff: list[str] = []"),),
        "tests/test_fleet.py"),
    Bug("fleet-dead-predecessor-is-a-rival", "ha/fleet.py",
        (("            elif seen.seen > first[instance].seen:", "            elif True:"),),
        "tests/test_fleet.py"),
    Bug("breaker-ignored", "control/dispatcher.py",
        (("(self._first,) if self.breaker.open else (self._first, self._ready)", "(self._first, self._ready)"),
         ("        if held is not None and self.breaker.open and not", "        if held is not None and False and not")),
        "tests/test_breaker.py::test_a_holding_middlebox_gets_no_pile_of_control_calls"),
    Bug("never-hand-over", "ha/fleet.py",
        (('        link = "broker" if not me.broker_ok else "API"\n', '        return None\n'),),
        "tests/test_takeover.py::test_a_leader_cut_off_from_the_broker_hands_over_to_the_standby"),
    Bug("presence-keepalive-default", "ha/standby.py",
        (("keepalive=max(2, round(cfg.ha.lease))", "keepalive=cfg.mqtt.keepalive"),),
        "tests/test_takeover.py::test_a_leader_cut_off_from_the_broker_hands_over_to_the_standby"),
    Bug("limiter-not-durable-without-quota", "service.py",
        (("if self.config.rate_limit.daily_quota or not bucket.unlimited or self.leadership is not None:",
          "if self.config.rate_limit.daily_quota or self.leadership is not None:"),),
        "tests/test_restart.py::test_a_restart_after_management_calls_does_not_start_from_a_full_bucket"),
    Bug("presence-never-swept", "ha/membership.py",
        (("                self.sweep({m.name for m in live})", "                pass"),),
        "tests/test_fleet.py::test_the_leader_clears_the_presence_of_bridges_that_are_gone"),
    Bug("history-not-a-duplicate", "journal/shared.py",
        (("if entry.request_id in self._rows or self._history.has_request(entry.request_id):",
          "if entry.request_id in self._rows:"),),
        "tests/test_ha.py::test_a_command_finished_before_a_takeover_is_still_a_duplicate_after_it"),
    Bug("history-state-forgotten", "journal/shared.py",
        (("        return await self._store.recall(request_id)", "        return None"),),
        "tests/test_ha.py::test_a_command_finished_before_a_takeover_is_still_a_duplicate_after_it"),
    Bug("prune-leaves-unloaded-rows", "journal/postgres.py",
        (("                if batch.sweep_before is not None:", "                if False:"),),
        "tests/test_journal_contract.py::test_a_finished_command_is_still_known_after_a_reopen"),
    Bug("polls-while-api-silent", "control/polling.py",
        (("        if self.held():\n", "        if False:\n"),),
        "tests/test_poll_window.py::test_no_poll_is_made_while_the_api_is_not_answering"),
    Bug("token-text-believed", "budget/authorization.py",
        (('        if not accepted and not PROBING.get() and self.state != "unauthorized":', "        if False:"),),
        "tests/test_operations.py::test_an_answer_that_mentions_a_token_only_makes_the_bridge_check_it"),
    Bug("stop-blocked-by-token", "control/lifecycle.py",
        (("ATTEMPT.set(all(is_safety(job.command) for job in jobs))", "ATTEMPT.set(False)"),),
        "tests/test_operations.py::test_a_refused_token_is_loud_costs_no_calls_and_recovers"),
    Bug("token-file-read-once", "service.py",
        (("        self._reload_token(api)\n        return await api.group_find_all(1, 1)",
          "        return await api.group_find_all(1, 1)"),),
        "tests/test_operations.py::test_a_corrected_token_file_is_read_again_at_the_next_recheck"),
    Bug("sighup-ignored", "cli/run.py",
        (("loop.add_signal_handler(signal.SIGHUP, service.reload)", "loop.add_signal_handler(signal.SIGHUP, print)"),),
        "tests/test_operations.py::test_sighup_reads_the_token_file_again_and_checks_it_at_once"),
    Bug("second-copy-runs", "ha/copies.py", (("    if others:\n", "    if False:\n"),),
        "tests/test_copies.py::test_a_second_copy_refuses_to_start_and_the_first_keeps_running"),
    Bug("restarts-taken-for-takeover", "mqtt/failures.py",
        (("if len(self._short) >= TAKEOVER_COUNT and not self.rival():", "if False:"),),
        "tests/test_copies.py::test_broker_restarts_however_many_never_end_the_bridge"),
    Bug("hanging-poll-outlives-window", "control/polling.py",
        (("await asyncio.wait_for(self._poll_once(command_id, jobs, prepaid), track_until - self.clock())",
          "await self._poll_once(command_id, jobs, prepaid)"),),
        "tests/test_poll_window.py::test_a_hanging_poll_ends_at_the_window_not_after_its_retries"),
    Bug("dry-run-checks-the-token", "service.py",
        (("        if self.config.commands.dry_run:\n            return  # a dry run calls nothing, not even the token check\n",
          ""),),
        "tests/test_bridge_bad_input.py::test_dry_run_validates_and_calls_nothing"),
    Bug("history-keys-unsorted", "journal/history.py",
        (("    if all(map(operator.le, keys, islice(keys, 1, None))):", "    if True:"),),
        "tests/test_journal_history.py::test_keys_that_arrive_out_of_order_are_sorted_with_their_instants"),
    Bug("lane-let-go-before-sending-is-on-record", "control/lane.py",
        (("            try:\n                await send(jobs)\n            finally:\n                self.release(jobs)\n",
          "            self.release(jobs)\n            await send(jobs)\n"),),
        "tests/test_lane.py::test_the_claim_holds_until_the_sending_write_is_on_record_and_ends_before_the_call"),
)  # fmt: skip


def planted(bug: Bug, workdir: Path) -> Path:
    """A copy of the package with `bug` in it; raises if an edit no longer matches the code."""
    target = workdir / bug.name
    for part in ("semookii_bridge", "tests"):
        shutil.copytree(ROOT / part, target / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    path = target / "semookii_bridge" / bug.module
    text = path.read_text()
    for old, new in bug.edits:
        if old not in text:
            raise SystemExit(f"{bug.name}: the code to break is gone from {bug.module}; update this script")
        text = text.replace(old, new, 1)
    path.write_text(text)
    return target


def fails(test: str, tree: Path) -> bool:
    """Whether `test` fails when run in `tree` (the package imported from there, by the tests and by the
    bridges they start)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test], cwd=tree,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)  # fmt: skip
    return run.returncode != 0


def main(names: list[str]) -> int:
    chosen = [b for b in BUGS if not names or b.name in names]
    problems = 0
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        for bug in chosen:
            caught = fails(bug.test, planted(bug, Path(tmp)))
            clean = not fails(bug.test, ROOT)
            ok = caught and clean
            problems += not ok
            print(f"{'ok ' if ok else 'BAD'} {bug.name:32} caught={caught} passes-without={clean} {bug.test}")
    print(f"{len(chosen) - problems} passed, {problems} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
