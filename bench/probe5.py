import asyncio, sys, subprocess
from bench.common import *
from bench.journey import run_journeys
from modelgate import stack as stack_mod

async def main(n, spy):
    stack = new_stack("http://127.0.0.1:4599", "probe")
    with running_system(stack):
        procs = Processes.of_stack(stack)
        await run_journeys(stack, procs, 20, None, 60)
        spies = []
        if spy:
            for s in SERVICES:
                spies.append(subprocess.Popen(["/work/main/.venv/bin/py-spy","record","-p",str(stack_mod.running_pid(stack,s)),"-d","20","-r","200","-o",f"/tmp/probe/main-spy-{s}.txt","-f","raw","--nonblocking","--gil"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL))
        run = await run_journeys(stack, procs, n, None, 300)
        for p in spies: p.wait()
        from bench.ceiling import middle_rate
        print("rate", middle_rate(sorted(j.notified for j in run.complete)), "seconds", run.seconds)
        print({k: round(1000*v/n,1) for k,v in run.cpu_seconds.items()})
        print(dict(run.aws_calls))
asyncio.run(main(int(sys.argv[1]), sys.argv[2:] == ["spy"]))
