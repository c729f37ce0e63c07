#!/usr/bin/env python3
"""Checks the library's layering (docs/ARCHITECTURE.md): no call cycle between files, and no
call from a layer to one above it. Usage: python3 dev/check_layers.py [src]. Exit 1 on a
violation. Reads the C files as text (function definitions at column 0, calls as NAME()."""
import re,glob,sys,os
ROOT=sys.argv[1] if len(sys.argv)>1 else 'src'
LAYER={'core':0,'nn':1,'io':1,'flow':2,'reverse':2,'eval':3,'edit':3,'train':4}
files=sorted(glob.glob(ROOT+'/**/*.c',recursive=True))
defs={}
src={}
for f in files:
    s=open(f).read()
    s=re.sub(r'/\*.*?\*/','',s,flags=re.S); s=re.sub(r'//.*','',s); s=re.sub(r'"(\\.|[^"\\])*"','""',s)
    src[f]=s
    for m in re.finditer(r'^[A-Za-z_][\w \*]*?\b(bf_\w+)\s*\([^;{]*\)\s*\{',s,flags=re.M):
        defs.setdefault(m.group(1),f)
G={f:set() for f in files}
for f,s in src.items():
    for m in re.finditer(r'\b(bf_\w+)\s*\(',s):
        d=defs.get(m.group(1))
        if d and d!=f: G[f].add(d)
# find SCCs
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in G[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: sccs.append(comp)
for v in G:
    if v not in idx: sc(v)
for comp in sccs:
    print("cycle:",comp)
    for a in comp:
        for b in G[a]:
            if b in comp:
                fns=sorted(set(m.group(1) for m in re.finditer(r'\b(bf_\w+)\s*\(',src[a]) if defs.get(m.group(1))==b))
                print("  ",a,"->",b,fns[:6])
bad=0
for a in G:
    for b in G[a]:
        la=LAYER.get(os.path.basename(os.path.dirname(a)),9); lb=LAYER.get(os.path.basename(os.path.dirname(b)),9)
        if lb>la:
            bad+=1
            fns=sorted(set(m.group(1) for m in re.finditer(r'\b(bf_\w+)\s*\(',src[a]) if defs.get(m.group(1))==b))
            print("upward call:",a,"->",b,fns[:6])
print(len(sccs),"cycles,",bad,"upward calls")
sys.exit(1 if sccs or bad else 0)
