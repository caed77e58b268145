"""nbdev's `show_doc` for diffnb's docs: a clean signature, the docstring, and a table of the parameters' docments.

nbdev uses it for every show_doc cell it adds (settings.ini: `renderer = docrender.DocRenderer`), so tools/ must be importable
where nbdev processes the notebooks: tools/checks.py and tools/docs.py put it on the path (`make docs`, `make test`); to run
nbdev's own commands by hand, use `PYTHONPATH=tools nbdev_docs`.

Compared with nbdev's default renderer, a parameter without an annotation shows no type (not the type of its default, as in
`generator:NoneType=None`), and parameters whose names start with `_` (test hooks) are left out of the signature and the table.
"""
import inspect, re
from nbdev.showdoc import BasicMarkdownRenderer, _ext_link
from nbdev.doclinks import NbdevLookup
from fastcore.docments import docments

MAXLINE = 90   # a signature longer than this is written one parameter a line

def fmt_anno(a) -> str:
    "An annotation as a reader writes it: `Tensor`, `float | None`, `str | torch.device`."
    if a is inspect.Parameter.empty: return ''
    if isinstance(a, str): return a
    if hasattr(a, '__forward_arg__'): return a.__forward_arg__   # a NamedTuple's string annotation
    if isinstance(a, type) and not getattr(a, '__args__', None): return a.__name__
    return re.sub(r"<class '([\w.]+)'>", r'\1', str(a)).replace('typing.', '').replace('NoneType', 'None')

def fmt_default(d) -> str:
    "A default value as it would be typed (functions by name, long reprs cut)."
    if d is inspect.Parameter.empty: return ''
    s = getattr(d, '__name__', None) if callable(d) else None
    s = s or repr(d)
    return s if len(s) <= 40 else s[:37] + '...'

def _cell(s:str) -> str: return s.replace('|', '\\|').replace('\n', '<br>')

class DocRenderer(BasicMarkdownRenderer):
    "show_doc's markdown: source link, heading, signature, docstring, then a Type/Default/Details table of the parameters."
    def _params(self) -> list:
        "(name, prefix, annotation, default, docment) of each public parameter, in order."
        if self.sig is None: return []
        try: dm = docments(self.sym, full=True)
        except Exception: dm = {}
        out = []
        for name, p in self.sig.parameters.items():
            if name in ('self', 'cls') or name.startswith('_'): continue
            pre = '*' if p.kind == p.VAR_POSITIONAL else '**' if p.kind == p.VAR_KEYWORD else ''
            doc = (dm.get(name) or {}).get('docment') or ''
            out.append((name, pre, fmt_anno(p.annotation), fmt_default(p.default), doc))
        return out

    def _signature(self, params:list) -> str:
        ret = fmt_anno(self.sig.return_annotation) if self.sig is not None else ''
        parts = [f"{pre}{n}{':' + a if a else ''}{'=' + d if d else ''}" for n, pre, a, d, _ in params]
        name, tail = self.nm, None
        tail = f") -> {ret}" if ret else ')'
        one = f"{name}({', '.join(parts)}{tail}"
        return one if len(one) <= MAXLINE or not parts else f"{name}(\n" + ''.join(f"    {s},\n" for s in parts) + tail

    def _table(self, params:list) -> str:
        if not any(doc for *_, doc in params): return ''
        rows = ['|    | **Type** | **Default** | **Details** |', '| -- | -------- | ----------- | ----------- |']
        rows += [f"| {pre}{n} | {_cell(a)} | {_cell(d and f'`{d}`')} | {_cell(doc)} |" for n, pre, a, d, doc in params]
        ret_doc = ((docments(self.sym, full=True).get('return') or {}).get('docment') or '') if self.sig is not None else ''
        if ret_doc: rows.append(f"| **Returns** | {_cell(fmt_anno(self.sig.return_annotation))} |  | {_cell(ret_doc)} |")
        return '\n'.join(rows)

    def _repr_markdown_(self):
        doc = '---\n\n'
        src = NbdevLookup().code(self.fn)
        if src: doc += _ext_link(src, 'source', 'style="float:right; font-size:smaller"') + '\n\n'
        doc += f"{'#' * self.title_level} {self.nm}\n\n"
        params = self._params()
        if self.sig is not None: doc += f"```python\n{self._signature(params)}\n```\n\n"
        if self.docs: doc += re.sub(r'^(\s*)(.+)', r'\1*\2*', self.docs.strip(), count=1) + '\n\n'   # the first line in italics, as nbdev's
        return doc + self._table(params)

    def __repr__(self):
        "The plain-text form (what a front end without markdown shows): the signature and the docstring."
        return (self._signature(self._params()) if self.sig is not None else self.nm) + (f'\n{self.docs}' if self.docs else '')
    __str__ = __repr__
