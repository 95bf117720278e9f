import re,glob,os,json
D='/root/go/pkg/mod/sigs.k8s.io/network-policy-api@v0.3.0/conformance/tests'
short={'gryffindor':'g','slytherin':'s','hufflepuff':'h','ravenclaw':'r','forbidden-forrest':'f'}
out=[]; blocks=[]
for f in sorted(glob.glob(D+'/*.go')):
    base=os.path.basename(f)
    if base=='main.go': continue
    src=open(f).read()
    # split into ConformanceTest vars
    for tm in re.finditer(r'var (\w+) = suite\.ConformanceTest\{(.*?)\n\}\n', src, re.S):
        name, body = tm.group(1), tm.group(2)
        man = re.search(r'Manifests:\s*\[\]string\{"([^"]*)"\}', body).group(1)
        ops=[]; servers={}; pend=None; blk=None; skip=False
        for line in body.split('\n'):
            s=line.strip()
            if not s or s.startswith('//'): continue
            m=re.match(r't\.Run\("([^"]*)"',s)
            if m:
                blk=None; ops.append("{run: %s}"%json.dumps(m.group(1))); continue
            m=re.search(r'(\w+)\s*:?=\s*kubernetes\.GetPod\(t, s\.Client, "network-policy-conformance-([\w-]+)", "([\w-]+)"',s)
            if m: servers[m.group(1)]=(short[m.group(2)],m.group(3)); continue
            m=re.search(r'PokeServer\(t, s\.ClientSet, &s\.KubeConfig, "network-policy-conformance-([\w-]+)", "([\w-]+)", "(\w+)",',s)
            if m: pend=(m.group(1),m.group(2),m.group(3)); blk=None; continue
            m=re.match(r'(\w+)\.Status\.PodIP, int32\((\d+)\), s\.TimeoutConfig, (true|false)\)',s)
            if m:
                sv=servers[m.group(1)]
                full={v:k for k,v in short.items()}
                ops.append('{from: "%s/%s", to: "%s/%s", proto: "%s", port: %s, want: %s}'%(short[pend[0]],pend[1],sv[0],sv[1],pend[2],m.group(2),m.group(3)))
                continue
            if 'HostNetworkPorts' in s:
                ops.append('{skip: "host-network server (node peer)"}'); continue
            if pend is None and blk is None and not re.search(r'mutate|Update|Patch|Label|Delete|np :=|err|newRule|Action|Networks|CIDR|mask|Name:|To:|Protocols|DestinationNamedPort|ctx', s):
                continue
            if re.search(r'mutate|Patch|Label|Delete|newRule|\.Priority|Action =', s) or blk is not None:
                if blk is None:
                    blk='%s#%d'%(name,len([o for o in ops if o.startswith('{mut')]))
                    ops.append('{mut: "%s"}'%blk)
                    blocks.append((blk,[]))
                blocks[-1][1].append(s)
                if 'Patch' in s or 'Delete(ctx' in s or 'RemovePodLabel' in s or 'SetPodLabel' in s: blk=None
        out.append((name,man,ops))
with open('/tmp/netpol/cnp_data.go.txt','w') as w:
    for name,man,ops in out:
        w.write('\t{%s, "%s", []cnpOp{\n'%(repr(name).replace("'",'"'),man))
        for o in ops: w.write('\t\t%s,\n'%o)
        w.write('\t}},\n')
with open('/tmp/netpol/blocks.txt','w') as w:
    for k,ls in blocks:
        w.write('== '+k+'\n'+'\n'.join('   '+l for l in ls)+'\n')
