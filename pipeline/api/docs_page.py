"""/docs as one self-contained page: no CDN, so it works on a box without internet (where Swagger UI from a CDN
was a blank page). It fetches /openapi.json (with the API key typed into the page, if the server needs one)
and lists every route with its parameters, request body and responses. Try requests with curl; the page says
how."""
from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%(title)s</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;padding:0 1em;color:#222}
h1{font-size:1.6em} .op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em .8em}
.m{display:inline-block;min-width:4.5em;font-weight:600;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}.delete{color:#c22}
code,pre{background:#f5f5f5;border-radius:4px;padding:.1em .3em} pre{padding:.6em;overflow:auto}
.muted{color:#777} summary{cursor:pointer} table{border-collapse:collapse} td{padding:.1em .6em .1em 0}
</style></head><body>
<h1>%(title)s</h1>
<p>The API schema, rendered without any external asset. Every route but <code>/healthz</code> needs an API key
(<code>X-API-Key</code> or <code>Authorization: Bearer</code>) unless the server binds to loopback only.</p>
<p><label>API key (only kept in this page): <input id="key" type="password" size="40"></label>
<button id="load">Load</button> <a href="%(openapi)s">openapi.json</a></p>
<div id="out" class="muted">loading %(openapi)s ...</div>
<script>
function esc(s){return String(s==null?"":s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
function typ(s){if(!s)return"";if(s.$ref)return s.$ref.split("/").pop();if(s.type==="array")return typ(s.items)+"[]";
 if(s.anyOf)return s.anyOf.map(typ).join(" | ");return s.type||""}
async function load(){
 const out=document.getElementById("out"),key=document.getElementById("key").value;
 const r=await fetch("%(openapi)s",{headers:key?{"X-API-Key":key}:{}});
 if(!r.ok){out.innerHTML="<p>"+r.status+": "+esc(await r.text())+" &mdash; type an API key above and Load.</p>";return}
 const api=await r.json();let h="<p>"+esc(api.info&&api.info.description)+"</p>";
 for(const [path,ops] of Object.entries(api.paths||{})){for(const [m,op] of Object.entries(ops)){
  h+='<div class="op"><span class="m '+m+'">'+m+'</span> <code>'+esc(path)+'</code> '+esc(op.summary||"");
  h+="<details><summary>details</summary>"+(op.description?"<p>"+esc(op.description)+"</p>":"");
  const ps=op.parameters||[];if(ps.length){h+="<table>";for(const p of ps){h+="<tr><td><code>"+esc(p.name)+
   "</code></td><td>"+esc(p.in)+"</td><td>"+esc(typ(p.schema))+"</td><td>"+(p.required?"required":"")+
   "</td><td>"+esc(p.description||"")+"</td></tr>"}h+="</table>"}
  if(op.requestBody){h+="<p>body: "+esc(Object.keys(op.requestBody.content||{}).join(", "))+"</p>"}
  h+="<p>responses: "+esc(Object.keys(op.responses||{}).join(", "))+"</p>";
  h+="<pre>curl -H 'X-API-Key: $KEY' -X "+m.toUpperCase()+" "+esc(location.origin+path)+"</pre></details></div>"}}
 out.className="";out.innerHTML=h}
document.getElementById("load").onclick=load;load();
</script></body></html>
"""


def offline_docs_html(title: str, openapi_url: str = "/openapi.json") -> str:
    return _PAGE % {"title": html.escape(title), "openapi": html.escape(openapi_url)}
