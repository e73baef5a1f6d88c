import { readdirSync, readFileSync } from 'node:fs';

/** What /proc/<pid>/stat says of one process, as far as tracking a job needs. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  pgrp: number;
  session: number;
  /** Start time since boot, in clock ticks: with the pid, it names one process for good. */
  start: number;
  /** `Z` for a zombie (dead, not yet reaped). */
  state: string;
}

/** One process's /proc/<pid>/stat, or undefined when it is gone. */
export function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: fields are read after its end.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      pid,
      state: f[0],
      ppid: Number(f[1]),
      pgrp: Number(f[2]),
      session: Number(f[3]),
      start: Number(f[19]),
    };
  } catch {
    return undefined;
  }
}

/** Every process now on the host (as far as this process can see /proc). */
export function listProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readProc(Number(name));
    if (p) out.push(p);
  }
  return out;
}

/** Whether the process's environment (as it started) holds `entry` exactly. */
function environHas(pid: number, entry: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(entry);
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How often the fallback looks at /proc for the job's new processes while it runs. */
export const PROC_SCAN_MS = 100;

/**
 * The fallback where no cgroup can be made (a non-root daemon without a delegated cgroup):
 * the job's processes are found in /proc, every PROC_SCAN_MS while it runs and again when it
 * is killed. A process belongs to the job when it started after the job's first process and
 * its parent belongs to the job, or it is in the job's session or process group, or its
 * environment still says `JOB_ID=<this job>`. Pids are remembered with their start time, so a
 * reused pid is never mistaken for the job's.
 *
 * What it cannot promise (README, "Process runner"): a process that leaves the session, loses
 * its parent between two looks (a double fork within PROC_SCAN_MS) and clears its environment
 * is not found; a cgroup has no such gap.
 */
export class ProcScope {
  private leader?: ProcInfo;
  /** pid → start time of every process found to be the job's. */
  private readonly members = new Map<number, number>();
  /** `pid:start` of processes looked at and found not to be the job's. */
  private readonly strangers = new Set<string>();
  private timer?: NodeJS.Timeout;
  private readonly marker: string;

  constructor(jobId: string) {
    this.marker = `JOB_ID=${jobId}`;
  }

  /** Starts following the job from its first process. */
  watch(pid: number): void {
    this.leader = readProc(pid) ?? {
      pid,
      ppid: process.pid,
      pgrp: pid,
      session: pid,
      start: 0,
      state: 'R',
    };
    this.members.set(pid, this.leader.start);
    this.timer = setInterval(() => this.scan(), PROC_SCAN_MS);
    this.timer.unref();
  }

  /** The job's processes alive now (zombies are dead, whatever their parent does). */
  live(): ProcInfo[] {
    const procs = this.scan();
    return procs.filter((p) => this.members.get(p.pid) === p.start && p.state !== 'Z');
  }

  signal(sig: NodeJS.Signals): void {
    for (const p of this.live()) this.send(p.pid, sig);
    if (this.leader) this.send(-this.leader.pgrp, sig);
  }

  killNow(): number {
    clearInterval(this.timer);
    const live = this.live();
    for (const p of live) this.send(p.pid, 'SIGKILL');
    if (this.leader) this.send(-this.leader.pgrp, 'SIGKILL');
    return live.length;
  }

  /** Kills every process found until none is left (5 s at most: they cannot survive SIGKILL). */
  async kill(): Promise<void> {
    const deadline = Date.now() + 5_000;
    while (this.killNow() > 0 && Date.now() < deadline) await sleep(20);
  }

  /** Looks at /proc once; adds the job's new processes; returns what it saw. */
  private scan(): ProcInfo[] {
    const procs = listProcs();
    const lead = this.leader;
    if (!lead) return procs;
    // Members that are gone are forgotten, so their pids, once reused, mean nothing.
    const now = new Map(procs.map((p) => [p.pid, p.start]));
    for (const [pid, start] of this.members) if (now.get(pid) !== start) this.members.delete(pid);
    const seen = new Set<string>();
    // Until nothing new is found: a child may be listed before its parent.
    for (let grew = true; grew;) {
      grew = false;
      for (const p of procs) {
        if (this.members.get(p.pid) === p.start || p.start < lead.start) continue;
        const key = `${p.pid}:${p.start}`;
        seen.add(key);
        const known = this.strangers.has(key);
        if (this.members.has(p.ppid) || (!known && this.belongs(p, lead))) {
          this.members.set(p.pid, p.start);
          this.strangers.delete(key);
          grew = true;
        } else if (!known) {
          this.strangers.add(key);
        }
      }
    }
    // Only what still runs is remembered: the set stays the size of the host's process table.
    for (const key of this.strangers) if (!seen.has(key)) this.strangers.delete(key);
    return procs;
  }

  /** Belongs by session, group or environment (the parent is checked on every look). */
  private belongs(p: ProcInfo, lead: ProcInfo): boolean {
    return p.session === lead.session || p.pgrp === lead.pgrp || environHas(p.pid, this.marker);
  }

  private send(pid: number, sig: NodeJS.Signals): void {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone already */
    }
  }
}
