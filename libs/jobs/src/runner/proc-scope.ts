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

/** Whether the process's environment (as it started) holds `entry` exactly. */
export function environHas(pid: number, entry: string): boolean {
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
 * environment says `JOB_ID=<this job>`. Each look reads the list of pids and the stat of new
 * pids only (a process is judged once, when first seen: a stranger cannot join the job later,
 * and a pid is not reused within one look's interval), so it costs little on a busy host.
 *
 * What it cannot promise (README.md, "Process runner"): a process that leaves the session, loses
 * its parent between two looks (a double fork within PROC_SCAN_MS) and clears its environment
 * is not found; a cgroup has no such gap.
 */
export class ProcScope {
  private leader?: ProcInfo;
  /** Every pid seen on the host, with its start time and whether it is the job's. */
  private readonly known = new Map<number, { start: number; member: boolean }>();
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
    this.known.set(pid, { start: this.leader.start, member: true });
    this.scan();
    this.timer = setInterval(() => this.scan(), PROC_SCAN_MS);
    this.timer.unref();
  }

  /** The job's processes alive now (zombies are dead, whatever their parent does). */
  live(): number[] {
    this.scan();
    const live: number[] = [];
    for (const [pid, k] of this.known) {
      if (!k.member) continue;
      const p = readProc(pid);
      if (p && p.start === k.start && p.state !== 'Z') live.push(pid);
    }
    return live;
  }

  signal(sig: NodeJS.Signals): void {
    for (const pid of this.live()) this.send(pid, sig);
    if (this.leader) this.send(-this.leader.pgrp, sig);
  }

  killNow(): number {
    clearInterval(this.timer);
    if (!this.leader) return this.killByMarker();
    const live = this.live();
    for (const pid of live) this.send(pid, 'SIGKILL');
    if (this.leader) this.send(-this.leader.pgrp, 'SIGKILL');
    return live.length;
  }

  /** Kills every process found until none is left (5 s at most: they cannot survive SIGKILL). */
  async kill(): Promise<void> {
    const deadline = Date.now() + 5_000;
    while (this.killNow() > 0 && Date.now() < deadline) await sleep(20);
  }

  /**
   * Without the job's first pid (its launcher died before saying it), the job's processes are
   * those whose environment names it: kills them, returns how many were alive.
   */
  private killByMarker(): number {
    let n = 0;
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const p = readProc(Number(name));
      if (!p || p.state === 'Z' || !environHas(p.pid, this.marker)) continue;
      this.send(p.pid, 'SIGKILL');
      n++;
    }
    return n;
  }

  /** Looks at /proc once: forgets the pids gone, judges the new ones. */
  private scan(): void {
    const lead = this.leader;
    if (!lead) return;
    const now = new Set<number>();
    const fresh: ProcInfo[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      now.add(pid);
      if (this.known.has(pid)) continue;
      const p = readProc(pid);
      if (p) fresh.push(p);
    }
    for (const pid of this.known.keys()) if (!now.has(pid)) this.known.delete(pid);
    // Until nothing new is found: a child may be listed before its parent.
    for (let grew = true; grew;) {
      grew = false;
      for (const p of fresh) {
        if (this.known.has(p.pid) || p.start < lead.start) continue;
        if (this.known.get(p.ppid)?.member || this.belongs(p, lead)) {
          this.known.set(p.pid, { start: p.start, member: true });
          grew = true;
        }
      }
    }
    for (const p of fresh) {
      if (!this.known.has(p.pid)) this.known.set(p.pid, { start: p.start, member: false });
    }
  }

  /** Belongs by session, group or environment (the parent is checked by the caller). */
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
