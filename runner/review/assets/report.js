/* mtrun report: draws the page from the JSON in #data.
 *
 * Every string that comes from a transcript is inserted as a text node or an
 * attribute value, never parsed as HTML. The conversation table renders only
 * the rows in view; a conversation's chat is built when it is opened.
 */
(function () {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STATUSES = ['completed', 'checks_failed', 'failed', 'interrupted'];
  const OUTCOMES = ['regressed', 'fixed', 'changed', 'same'];
  const DIFF_CELLS = 4e6;
  const DATA = JSON.parse(document.getElementById('data').textContent);
  const app = document.getElementById('app');
  const numberFormat = new Intl.NumberFormat('en-US');

  // -- small helpers ----------------------------------------------------------------

  function h(tag, props, children) {
    return fill(document.createElement(tag), props, children);
  }

  function s(tag, props, children) {
    return fill(document.createElementNS(SVG_NS, tag), props, children);
  }

  function fill(node, props, children) {
    if (props) {
      for (const key of Object.keys(props)) {
        const value = props[key];
        if (value === null || value === undefined || value === false) continue;
        if (key === 'class') node.setAttribute('class', value);
        else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    add(node, children);
    return node;
  }

  function add(node, children) {
    if (children === null || children === undefined) return node;
    for (const child of Array.isArray(children) ? children : [children]) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) { add(node, child); continue; }
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const isNum = (v) => typeof v === 'number' && isFinite(v);
  const isInt = (v) => Number.isInteger(v);
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const arr = (v) => (Array.isArray(v) ? v : []);
  const text = (v) => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));

  function fmtInt(n) {
    return isNum(n) ? numberFormat.format(Math.round(n)) : '–';
  }

  // "1 turn", "2 turns", "1,234 turns": runner/words.py's rule, for what the page writes itself.
  function plural(n, word, many) {
    return fmtInt(n) + ' ' + (n === 1 ? word : many || word + 's');
  }

  function fmtMs(ms) {
    if (!isNum(ms)) return '–';
    if (Math.abs(ms) < 10) return ms.toFixed(1) + ' ms';
    if (Math.abs(ms) < 1000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(Math.abs(ms) < 10000 ? 2 : 1) + ' s';
  }

  function fmtSeconds(sec) {
    if (!isNum(sec)) return '–';
    if (sec < 60) return sec.toFixed(sec < 10 ? 2 : 1) + ' s';
    const min = Math.floor(sec / 60);
    if (min < 60) return min + ' min ' + Math.round(sec - min * 60) + ' s';
    return Math.floor(min / 60) + ' h ' + (min % 60) + ' min';
  }

  function signed(v, format) {
    if (!isNum(v)) return '–';
    return (v > 0 ? '+' : v < 0 ? '−' : '±') + format(Math.abs(v));
  }

  function fmtTime(iso) {
    return typeof iso === 'string' && iso ? iso.replace('T', ' ').replace(/Z$/, ' UTC') : '–';
  }

  function badge(word, extra) {
    return h('span', { class: 'badge ' + word, 'data-value': word }, extra || word || 'unknown');
  }

  function contentText(content) {
    if (content === null || content === undefined) return null;
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) {
      return content
        .map((part) => (isObj(part) && part.type === 'text' && typeof part.text === 'string'
          ? part.text
          : '[' + (isObj(part) ? text(part.type) || 'part' : 'part') + '] ' + JSON.stringify(part)))
        .join('\n');
    }
    return JSON.stringify(content);
  }

  function panel(title, children, props) {
    return h('section', Object.assign({ class: 'panel section' }, props || {}), [
      title ? h('h2', null, title) : null,
    ].concat(children));
  }

  function dl(pairs) {
    const node = h('dl', { class: 'meta' });
    for (const [label, value] of pairs) {
      add(node, [h('dt', null, label), h('dd', null, value === '' || value === null ? '–' : value)]);
    }
    return node;
  }

  function tile(key, label, value, sub, tone) {
    return h('div', { class: 'tile ' + (tone || ''), 'data-total': key }, [
      h('div', { class: 'value' }, value),
      h('div', { class: 'label' }, label),
      sub ? h('div', { class: 'sub' }, sub) : null,
    ]);
  }

  // -- reading records ----------------------------------------------------------------

  function turnsOf(rec) {
    return arr(rec.turns).filter(isObj);
  }

  /* Where a turn's answer is in messages: the last step's message, else the one after its user message. */
  function answerIndexOf(turn) {
    const steps = arr(turn.steps).filter(isObj);
    if (steps.length) return isInt(steps[steps.length - 1].message_index) ? steps[steps.length - 1].message_index : null;
    return isInt(turn.message_index) ? turn.message_index + 1 : null;
  }

  const callsOf = (message) => arr(isObj(message) ? message.tool_calls : null).filter(isObj);

  function answerOf(rec, turn) {
    if (!turn || turn.error !== undefined && turn.error !== null || !isInt(turn.message_index)) return null;
    const at = answerIndexOf(turn);
    const message = at !== null && at > turn.message_index ? arr(rec.messages)[at] : null;
    if (!isObj(message) || message.role !== 'assistant' || callsOf(message).length) return null;
    return message;
  }

  /* Tokens a judge check's request used, as report.run_summary counts them (prompt + completion). */
  function judgeUsage(check) {
    const usage = isObj(check) && isObj(check.details) && isObj(check.details.usage) ? check.details.usage : {};
    return (isInt(usage.prompt_tokens) ? usage.prompt_tokens : 0) + (isInt(usage.completion_tokens) ? usage.completion_tokens : 0);
  }

  function conversationRow(rec, i) {
    const turns = turnsOf(rec);
    const totals = isObj(rec.totals) ? rec.totals : {};
    let latency = null;
    let failedChecks = 0;
    let tokens = 0, judgeTokens = 0;
    for (const turn of turns) {
      if (isNum(turn.latency_ms)) latency = (latency || 0) + turn.latency_ms;
      for (const check of arr(turn.checks)) {
        if (isObj(check) && check.passed !== true) failedChecks++;
        judgeTokens += judgeUsage(check);
      }
      if (isObj(turn.usage)) tokens += usageTotal(turn.usage);
    }
    const id = text(rec.id);
    const source = text(rec.source);
    return {
      i: i,
      rec: rec,
      id: id,
      source: source,
      status: text(rec.status) || 'unknown',
      turns: isInt(totals.turns) ? totals.turns : turns.filter((t) => t.error === undefined || t.error === null).length,
      sent: turns.length,
      tokens: (isInt(totals.total_tokens) ? totals.total_tokens : tokens) + judgeTokens,
      latency: latency,
      failedChecks: failedChecks,
      key: (id + '\n' + source).toLowerCase(),
      body: null,
    };
  }

  function bodyOf(row) {
    if (row.body === null) {
      row.body = arr(row.rec.messages)
        .map((m) => (isObj(m) ? contentText(m.content) || '' : ''))
        .join('\n')
        .toLowerCase();
    }
    return row.body;
  }

  function byId(records) {
    const map = new Map();
    records.forEach((rec) => map.set(text(rec.id), rec));
    return map;
  }

  // -- the virtual table ----------------------------------------------------------------

  /* A table that renders only the rows in view (plus a margin) between two
   * spacer rows, so 10,000 rows cost as much as 60. */
  function virtualTable(options) {
    const columns = options.columns;
    const scroll = h('div', { class: 'table-scroll', id: options.id + '-scroll' });
    const table = h('table', { class: 'grid', id: options.id });
    const colgroup = h('colgroup', null, columns.map((c) => {
      const col = h('col');
      if (c.width) col.style.width = c.width;
      return col;
    }));
    const headRow = h('tr');
    const tbody = h('tbody');
    add(table, [colgroup, h('thead', null, headRow), tbody]);
    scroll.appendChild(table);

    let view = [];
    let sortKey = options.sort.key;
    let sortDir = options.sort.dir;
    let rowHeight = 34;
    let frame = 0;

    columns.forEach((column) => {
      const th = h('th', {
        class: column.num ? 'num' : '',
        'data-key': column.key,
        scope: 'col',
        tabindex: '0',
        title: 'Sort by ' + column.label.toLowerCase(),
      }, column.label);
      const sortBy = () => {
        if (sortKey === column.key) sortDir = -sortDir;
        else { sortKey = column.key; sortDir = column.num ? -1 : 1; }
        sortView();
        scroll.scrollTop = 0;
        paint();
      };
      th.addEventListener('click', sortBy);
      th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(); } });
      headRow.appendChild(th);
    });

    function compare(a, b) {
      if (a === b) return 0;
      if (a === null || a === undefined) return 1;
      if (b === null || b === undefined) return -1;
      if (typeof a === 'number' && typeof b === 'number') return a - b;
      return String(a).localeCompare(String(b), 'en', { numeric: true });
    }

    function sortView() {
      const column = columns.find((c) => c.key === sortKey) || columns[0];
      view.sort((a, b) => {
        const va = column.value(a);
        const vb = column.value(b);
        if (va === null || va === undefined || vb === null || vb === undefined) {
          return compare(va, vb) || a.i - b.i;
        }
        return sortDir * compare(va, vb) || a.i - b.i;
      });
      for (const th of headRow.children) {
        if (th.getAttribute('data-key') === column.key) {
          th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
        } else {
          th.removeAttribute('aria-sort');
        }
      }
    }

    function spacer(height) {
      const td = h('td', { colspan: String(columns.length) });
      td.style.height = height + 'px';
      return h('tr', { class: 'spacer', 'aria-hidden': 'true' }, td);
    }

    function paint() {
      // Read the scroll position before touching the rows: emptying them would clamp it.
      const viewport = scroll.clientHeight || window.innerHeight || 800;
      const scrolled = scroll.scrollTop;
      const rows = document.createDocumentFragment();
      if (!view.length) {
        rows.appendChild(h('tr', null, h('td', { class: 'empty', colspan: String(columns.length) }, options.empty)));
        tbody.replaceChildren(rows);
        return;
      }
      const first = Math.min(view.length - 1, Math.max(0, Math.floor(scrolled / rowHeight) - 15));
      const last = Math.min(view.length, first + Math.ceil(viewport / rowHeight) + 30);
      if (first > 0) rows.appendChild(spacer(first * rowHeight));
      let sample = null;
      for (let pos = first; pos < last; pos++) {
        const row = view[pos];
        const tr = h('tr', { class: 'row', tabindex: '0', 'data-pos': String(pos) });
        for (const column of columns) {
          const td = h('td', { class: column.num ? 'num' : '' });
          add(td, column.render(row));
          const tip = column.tip ? column.tip(row) : null;
          if (tip) td.title = tip;
          tr.appendChild(td);
        }
        rows.appendChild(tr);
        sample = sample || tr;
      }
      if (last < view.length) rows.appendChild(spacer((view.length - last) * rowHeight));
      tbody.replaceChildren(rows);
      const measured = sample ? sample.getBoundingClientRect().height : 0;
      if (measured > 0) rowHeight = measured;
    }

    function open(event) {
      const tr = event.target.closest('tr.row');
      if (tr) options.open(view[Number(tr.getAttribute('data-pos'))]);
    }

    tbody.addEventListener('click', open);
    tbody.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(e); });
    scroll.addEventListener('scroll', () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; paint(); });
    });

    return {
      node: scroll,
      paint: paint,
      setRows(rows) {
        view = rows.slice();
        sortView();
        scroll.scrollTop = 0;
        paint();
      },
    };
  }

  /* Search box, filter select and count above a virtual table. */
  function filteredTable(options) {
    const search = h('input', {
      type: 'search', id: 'search', placeholder: options.placeholder, 'aria-label': 'Search conversations',
      autocomplete: 'off', spellcheck: 'false',
    });
    const deep = h('input', { type: 'checkbox', id: 'search-messages' });
    const select = h('select', { id: options.filterId, 'aria-label': options.filterLabel }, [
      h('option', { value: '' }, 'every ' + options.filterNoun),
    ].concat(options.filterValues.map(([value, count]) => h('option', { value: value }, value + ' (' + fmtInt(count) + ')'))));
    const count = h('span', { class: 'count', id: 'count', 'aria-live': 'polite' });
    const table = virtualTable(options);
    let timer = 0;

    function apply() {
      const query = search.value.trim().toLowerCase();
      const wanted = select.value;
      const shown = options.rows.filter((row) => (!wanted || options.filterValue(row) === wanted)
        && (!query || row.key.includes(query) || deep.checked && bodyOf(row).includes(query)));
      table.setRows(shown);
      count.textContent = fmtInt(shown.length) + ' of ' + plural(options.rows.length, 'conversation');
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(apply, options.rows.length > 2000 ? 150 : 0);
    }

    search.addEventListener('input', later);
    deep.addEventListener('change', apply);
    select.addEventListener('change', apply);
    apply();
    const toolbar = h('div', { class: 'toolbar' }, [
      search,
      h('label', { for: 'search-messages' }, [deep, 'also search messages']),
      select,
      count,
    ]);
    return { nodes: [toolbar, table.node], paint: table.paint };
  }

  // -- charts ----------------------------------------------------------------

  function niceTicks(max) {
    if (!(max > 0)) return { top: 1, ticks: [0, 1] };
    const rough = max / 4;
    const base = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 5, 10].map((m) => m * base).find((st) => max / st <= 5) || base * 10;
    const top = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
    return { top: top, ticks: ticks };
  }

  function axes(svg, geometry, ticks, format, labels) {
    const { left, top, width, height } = geometry;
    for (const tick of ticks.ticks) {
      const y = top + height - (tick / ticks.top) * height;
      add(svg, [
        s('line', { class: tick === 0 ? 'axis' : 'grid', x1: left, x2: left + width, y1: y, y2: y }),
        s('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, format(tick)),
      ]);
    }
    const every = Math.ceil(labels.length / 20);
    labels.forEach((label, k) => {
      if (k % every) return;
      const x = left + (k + 0.5) * (width / labels.length);
      svg.appendChild(s('text', { x: x, y: top + height + 15, 'text-anchor': 'middle' }, label));
    });
    svg.appendChild(s('text', { x: left + width / 2, y: top + height + 30, 'text-anchor': 'middle' }, 'turn'));
  }

  function statusChart(id, statuses) {
    const entries = Object.keys(statuses).filter((k) => STATUSES.includes(k) || statuses[k] > 0).map((k) => [k, statuses[k]]);
    const total = entries.reduce((sum, [, n]) => sum + n, 0);
    const W = 480, rowH = 34, left = 110, right = 92;
    const svg = s('svg', { id: id, viewBox: '0 0 ' + W + ' ' + (entries.length * rowH + 8), role: 'img', 'aria-label': 'Conversations by status' });
    entries.forEach(([status, n], k) => {
      const y = 6 + k * rowH;
      const width = total ? (n / total) * (W - left - right) : 0;
      const bar = s('rect', { class: STATUSES.includes(status) ? 'st-' + status : 'st-other', x: left, y: y, width: Math.max(width, n ? 2 : 0), height: rowH - 12, rx: 3 });
      bar.appendChild(s('title', null, status + ': ' + fmtInt(n)));
      add(svg, [
        s('rect', { class: 'bar-track', x: left, y: y, width: W - left - right, height: rowH - 12, rx: 3 }),
        bar,
        s('text', { class: 'label-strong', x: left - 8, y: y + (rowH - 12) / 2 + 4, 'text-anchor': 'end' }, status),
        s('text', { x: W - right + 8, y: y + (rowH - 12) / 2 + 4 }, fmtInt(n) + (total ? ' (' + Math.round((n / total) * 100) + '%)' : '')),
      ]);
    });
    return svg;
  }

  function latencyChart(id, turns) {
    const drawn = turns.filter((t) => Array.isArray(t.latency));
    if (!drawn.length) return h('div', { class: 'empty', id: id }, 'No turn has a latency.');
    const W = 480, H = 240;
    const g = { left: 58, top: 10, width: W - 70, height: H - 50 };
    const ticks = niceTicks(Math.max.apply(null, drawn.map((t) => t.latency[4])));
    const svg = s('svg', { id: id, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Latency by turn' });
    axes(svg, g, ticks, fmtMs, turns.map((t) => String(t.index + 1)));
    const band = g.width / turns.length;
    const y = (v) => g.top + g.height - (v / ticks.top) * g.height;
    turns.forEach((t, k) => {
      if (!Array.isArray(t.latency)) return;
      const [lo, q1, med, q3, hi] = t.latency;
      const cx = g.left + (k + 0.5) * band;
      const half = Math.max(2, Math.min(18, band * 0.3));
      const group = s('g', { class: 'latency-box' }, [
        s('title', null, 'Turn ' + (t.index + 1) + ': ' + plural(t.n, 'answer') + '; median ' + fmtMs(med)
          + ', middle half ' + fmtMs(q1) + '–' + fmtMs(q3) + ', range ' + fmtMs(lo) + '–' + fmtMs(hi)),
        s('line', { class: 'whisker', x1: cx, x2: cx, y1: y(hi), y2: y(lo) }),
        s('line', { class: 'whisker', x1: cx - half / 2, x2: cx + half / 2, y1: y(hi), y2: y(hi) }),
        s('line', { class: 'whisker', x1: cx - half / 2, x2: cx + half / 2, y1: y(lo), y2: y(lo) }),
        s('rect', { class: 'box', x: cx - half, y: y(q3), width: 2 * half, height: Math.max(1, y(q1) - y(q3)) }),
        s('line', { class: 'median', x1: cx - half, x2: cx + half, y1: y(med), y2: y(med) }),
      ]);
      svg.appendChild(group);
    });
    return svg;
  }

  function tokensChart(id, turns) {
    const drawn = turns.filter((t) => isNum(t.prompt) || isNum(t.completion));
    if (!drawn.length) return h('div', { class: 'empty', id: id }, 'No turn reported token usage.');
    const W = 480, H = 240;
    const g = { left: 58, top: 10, width: W - 70, height: H - 50 };
    const ticks = niceTicks(Math.max.apply(null, drawn.map((t) => Math.max(t.prompt || 0, t.completion || 0))));
    const svg = s('svg', { id: id, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Median tokens by turn' });
    axes(svg, g, ticks, fmtInt, turns.map((t) => String(t.index + 1)));
    const band = g.width / turns.length;
    const barW = Math.max(1, Math.min(16, band * 0.36));
    turns.forEach((t, k) => {
      const cx = g.left + (k + 0.5) * band;
      [['prompt', t.prompt, -barW], ['completion', t.completion, 0]].forEach(([kind, value, offset]) => {
        if (!isNum(value)) return;
        const height = (value / ticks.top) * g.height;
        const bar = s('rect', { class: 'bar-' + kind, x: cx + offset, y: g.top + g.height - height, width: barW, height: Math.max(height, 0.5) });
        bar.appendChild(s('title', null, 'Turn ' + (t.index + 1) + ': median ' + kind + ' tokens ' + fmtInt(value)));
        svg.appendChild(bar);
      });
    });
    return svg;
  }

  function charts(run, prefix) {
    const c = run.charts || {};
    const turns = arr(c.turns);
    const note = c.turns_not_drawn ? plural(c.turns_not_drawn, 'later turn number') + ' not drawn.' : null;
    return h('div', { class: 'charts' }, [
      h('div', { class: 'panel chart' }, [h('h3', null, 'Status'), statusChart(prefix + 'status', c.statuses || {})]),
      h('div', { class: 'panel chart' }, [
        h('h3', null, 'Latency by turn'),
        latencyChart(prefix + 'latency', turns),
        h('div', { class: 'chart-note' }, 'Box: middle half of the answers; line: median; whiskers: fastest and slowest.'),
        note ? h('div', { class: 'chart-note' }, note) : null,
      ]),
      h('div', { class: 'panel chart' }, [
        h('h3', null, 'Median tokens by turn'),
        tokensChart(prefix + 'tokens', turns),
        h('div', { class: 'legend' }, [
          h('span', null, [h('span', { class: 'swatch prompt' }), 'prompt (grows with the history)']),
          h('span', null, [h('span', { class: 'swatch completion' }), 'completion']),
        ]),
      ]),
    ]);
  }

  // -- overview of one run ----------------------------------------------------------------

  function metaPairs(run) {
    const meta = run.meta || {};
    const list = (values) => (arr(values).length ? arr(values).join(', ') : '–');
    return [
      ['Source file', text(meta.source || run.source)],
      [arr(meta.run_ids).length > 1 ? 'Run ids' : 'Run id', list(meta.run_ids)],
      [arr(meta.models).length > 1 ? 'Models' : 'Model', list(meta.models)],
      [arr(meta.endpoints).length > 1 ? 'Endpoints' : 'Endpoint', list(meta.endpoints)],
      ['Started', fmtTime(meta.started_at)],
      ['Finished', fmtTime(meta.finished_at)],
    ];
  }

  function totalTiles(run) {
    const t = run.totals || {};
    const st = t.statuses || {};
    return h('div', { class: 'tiles', id: 'totals' }, [
      tile('conversations', 'conversations', fmtInt(t.conversations)),
      tile('completed', 'completed', fmtInt(st.completed || 0), null, 'ok'),
      tile('checks_failed', 'checks failed', fmtInt(st.checks_failed || 0), null, st.checks_failed ? 'warn' : ''),
      tile('failed', 'failed', fmtInt(st.failed || 0), null, st.failed ? 'bad' : ''),
      tile('interrupted', 'interrupted', fmtInt(st.interrupted || 0), null, st.interrupted ? 'grey' : ''),
      tile('turns', 'turns answered', fmtInt(t.turns), 'of ' + fmtInt(t.turns_sent) + ' sent'),
      tile('tokens', 'tokens', fmtInt(t.total_tokens), fmtInt(t.prompt_tokens) + ' prompt · ' + fmtInt(t.completion_tokens) + ' completion' + (t.judge_tokens ? ' · ' + fmtInt(t.judge_tokens) + ' by the judge' : '')),
      tile('retries', 'retries', fmtInt(t.retries), plural(t.attempts, 'attempt'), t.retries ? 'warn' : ''),
      tile('failed_checks', 'failed checks', fmtInt(t.failed_checks), null, t.failed_checks ? 'bad' : ''),
      tile('wall', 'wall time', fmtSeconds(t.wall_s), fmtMs(t.latency_ms) + ' waiting for answers'),
    ]);
  }

  function runOverview(run, rows) {
    const statuses = (run.totals && run.totals.statuses) || {};
    const table = filteredTable({
      id: 'conversations',
      rows: rows,
      placeholder: 'Search conversation id or file…',
      filterId: 'status-filter',
      filterLabel: 'Status',
      filterNoun: 'status',
      filterValues: Object.keys(statuses).filter((k) => statuses[k] > 0).map((k) => [k, statuses[k]]),
      filterValue: (row) => row.status,
      empty: 'No conversation matches.',
      sort: { key: 'id', dir: 1 },
      open: (row) => go(row.id),
      columns: [
        { key: 'id', label: 'Conversation', width: '26%', value: (r) => r.id, render: (r) => r.id, tip: (r) => r.id },
        { key: 'source', label: 'Source', width: '26%', value: (r) => r.source, render: (r) => r.source, tip: (r) => r.source },
        { key: 'status', label: 'Status', width: '13%', value: (r) => r.status, render: (r) => badge(r.status) },
        { key: 'turns', label: 'Turns', num: true, width: '8%', value: (r) => r.turns, render: (r) => (r.turns === r.sent ? fmtInt(r.turns) : fmtInt(r.turns) + '/' + fmtInt(r.sent)) },
        { key: 'tokens', label: 'Tokens', num: true, width: '9%', value: (r) => r.tokens, render: (r) => fmtInt(r.tokens) },
        { key: 'latency', label: 'Latency', num: true, width: '9%', value: (r) => r.latency, render: (r) => fmtMs(r.latency) },
        { key: 'checks', label: 'Failed checks', num: true, width: '9%', value: (r) => r.failedChecks, render: (r) => (r.failedChecks ? h('span', { class: 'fails' }, fmtInt(r.failedChecks)) : '0') },
      ],
    });
    const node = h('div', { id: 'overview' }, [
      h('h1', null, DATA.title),
      h('p', { class: 'subtitle' }, 'One run · ' + text(run.source)),
      h('div', { class: 'meta-grid section' }, [h('div', { class: 'panel', id: 'run-meta' }, [h('h2', null, 'Run'), dl(metaPairs(run))])]),
      h('div', { class: 'section' }, totalTiles(run)),
      h('div', { class: 'section' }, charts(run, 'chart-')),
      panel('Conversations', table.nodes),
    ]);
    return { node: node, paint: table.paint };
  }

  // -- one conversation as a chat ----------------------------------------------------------------

  function bubble(message) {
    if (!isObj(message)) return h('div', { class: 'msg' }, h('div', { class: 'body' }, text(message)));
    if (message.role === 'assistant' && callsOf(message).length) return callsBubble(message, null);  // pre-filled
    const role = text(message.role) || 'message';
    const body = contentText(message.content);
    return h('div', { class: 'msg ' + role, 'data-role': role }, [
      h('div', { class: 'role' }, role + (message.name ? ' · ' + text(message.name) : '')),
      h('div', { class: 'body' }, body === null ? h('span', { class: 'none' }, '(no content)') : body),
    ]);
  }

  /* Arguments pretty-printed when they are JSON text, other text as given. */
  function prettyArguments(value) {
    if (typeof value !== 'string') return value === null || value === undefined ? '' : text(value);
    try {
      const parsed = JSON.parse(value);
      if (parsed !== null && typeof parsed === 'object') return JSON.stringify(parsed, null, 2);
    } catch (e) { /* not JSON: shown as given */ }
    return value;
  }

  function reasoningNodes(step) {
    const reasoning = isObj(step) && isObj(step.reasoning) ? step.reasoning : {};
    return Object.keys(reasoning).filter((key) => ![null, undefined, ''].includes(reasoning[key])).map((key) =>
      h('details', { class: 'reasoning', 'data-field': key }, [
        h('summary', null, 'reasoning · ' + key),
        h('pre', null, typeof reasoning[key] === 'string' ? reasoning[key] : JSON.stringify(reasoning[key], null, 2)),
      ]));
  }

  function callsBubble(message, number) {
    const calls = callsOf(message);
    const body = contentText(message.content);
    return h('div', { class: 'msg assistant tool-calls', 'data-role': 'assistant', 'data-step': number === null ? null : String(number) }, [
      h('div', { class: 'role' }, 'assistant · ' + (number === null ? '' : 'step ' + (number + 1) + ' · ') + plural(calls.length, 'tool call')),
      body ? h('div', { class: 'body' }, body) : null,
      calls.map((c) => {
        const fn = isObj(c.function) ? c.function : {};
        return h('div', { class: 'call', 'data-tool': text(fn.name) }, [
          h('div', { class: 'call-name' }, [h('b', null, text(fn.name) || '?'), c.id ? ' (' + text(c.id) + ')' : null]),
          h('pre', { class: 'args' }, prettyArguments(fn.arguments)),
        ]);
      }),
    ]);
  }

  function toolBubble(message, names) {
    const id = text(message.tool_call_id);
    const body = contentText(message.content);
    return h('div', { class: 'msg tool', 'data-role': 'tool', 'data-call': id }, [
      h('div', { class: 'role' }, 'tool' + (names.has(id) ? ' · ' + names.get(id) : '') + (id ? ' (' + id + ')' : '')),
      h('div', { class: 'body' }, body === null ? h('span', { class: 'none' }, '(no content)') : body),
    ]);
  }

  /* A turn's tool exchange: each step's reasoning (collapsed), its calls and their results;
   * then the final step's reasoning (a turn without steps: its answer's). `last` is the last
   * message index shown. */
  function stepNodes(rec, turn) {
    const messages = arr(rec.messages);
    const at = turn.message_index;
    let steps = arr(turn.steps).filter(isObj);
    if (!steps.length) steps = [{ message_index: at + 1, reasoning: turn.reasoning }];
    const nodes = [];
    let last = at;
    steps.forEach((step, position) => {
      const where = step.message_index;
      if (!isInt(where) || where <= at || where >= messages.length) return;
      nodes.push(reasoningNodes(step));
      const message = messages[where];
      if (!isObj(message) || message.role !== 'assistant' || !callsOf(message).length) return;
      const names = new Map(callsOf(message).map((c) => [text(c.id), isObj(c.function) ? text(c.function.name) : '']));
      nodes.push(callsBubble(message, isInt(step.step) ? step.step : position));
      last = Math.max(last, where);
      for (let k = where + 1; k < messages.length && isObj(messages[k]) && messages[k].role === 'tool'; k++) {
        nodes.push(toolBubble(messages[k], names));
        last = Math.max(last, k);
      }
    });
    return { nodes: nodes, last: last };
  }

  function errorBox(error, label) {
    if (!isObj(error)) return null;
    const interrupted = error.kind === 'interrupted';
    const head = [label, isInt(error.turn) ? 'turn ' + (error.turn + 1) : null, text(error.kind),
      isInt(error.status) ? 'HTTP ' + error.status : null].filter(Boolean).join(' · ');
    return h('div', { class: 'error-box' + (interrupted ? ' interrupted' : '') }, [h('b', null, head), '\n', text(error.message)]);
  }

  function checkNode(check, flip) {
    if (!isObj(check)) return null;
    const passed = check.passed === true;
    const details = isObj(check.details) ? check.details : {};
    const verdict = isObj(details.verdict) ? details.verdict : null;
    const kv = (label, value) => (value === undefined || value === null || value === '' ? null
      : h('div', { class: 'kv' }, [label + ': ', h('b', null, text(value))]));
    return h('div', { class: 'check ' + (passed ? 'pass' : 'fail'), 'data-kind': text(check.kind) }, [
      h('div', { class: 'head' }, [
        badge(passed ? 'pass' : 'fail', passed ? '✓ pass' : '✗ fail'),
        text(check.kind) || 'check',
        check.scope ? h('span', { class: 'muted' }, '(' + text(check.scope) + ')') : null,
        flip ? h('span', { class: 'badge ' + flip }, flip === 'regressed' ? 'pass → fail' : flip === 'fixed' ? 'fail → pass' : flip) : null,
      ]),
      kv('expected', check.expected),
      kv('seen', check.seen),
      kv('why', check.message),
      verdict ? kv('judge', (verdict.pass ? 'pass' : 'fail') + (verdict.reason ? ': ' + text(verdict.reason) : '')) : null,
      kv('judge model', details.model),
      kv('judge error', details.error),
      isObj(details.usage) ? kv('judge tokens', usageText(details.usage)) : null,
    ]);
  }

  function attemptNode(attempt, last) {
    if (!isObj(attempt)) return null;
    const ok = attempt.outcome === 'ok';
    const parts = [
      h('span', { class: 'outcome' }, (isInt(attempt.step) ? 'step ' + (attempt.step + 1) + ' ' : '') + '#' + text(attempt.attempt) + ' ' + text(attempt.outcome)),
      isInt(attempt.status) ? ' · HTTP ' + attempt.status : '',
      isNum(attempt.latency_ms) ? ' · ' + fmtMs(attempt.latency_ms) : '',
      isNum(attempt.retry_after_s) ? ' · server asked ' + fmtSeconds(attempt.retry_after_s) : '',
      isNum(attempt.wait_s) ? ' · waited ' + fmtSeconds(attempt.wait_s) : '',
      attempt.resumed ? ' · before resume' : '',
      attempt.message ? h('div', { class: 'muted' }, text(attempt.message)) : null,
    ];
    return h('div', { class: 'attempt ' + (ok ? 'ok' : last ? 'failed' : 'retry') }, parts);
  }

  function usageTotal(usage) {
    const p = usage.prompt_tokens, c = usage.completion_tokens;
    return isInt(usage.total_tokens) ? usage.total_tokens : (isInt(p) ? p : 0) + (isInt(c) ? c : 0);
  }

  function usageText(usage) {
    if (!isObj(usage)) return null;
    return plural(usageTotal(usage), 'token') + ' (' + fmtInt(usage.prompt_tokens) + ' in, ' + fmtInt(usage.completion_tokens) + ' out)';
  }

  function fact(label, value) {
    return value === null || value === undefined || value === '' ? null : h('span', null, [label + ' ', h('b', null, value)]);
  }

  /* A turn's extra fields but those its reasoning holds (shown collapsed in the chat). */
  function extraShown(turn) {
    const extra = isObj(turn.extra) ? turn.extra : {};
    const reasoning = isObj(turn.reasoning) ? turn.reasoning : {};
    const shown = {};
    for (const key of Object.keys(extra)) {
      if (!(key in reasoning) || JSON.stringify(reasoning[key]) !== JSON.stringify(extra[key])) shown[key] = extra[key];
    }
    return shown;
  }

  function turnAside(turn, rec, flips) {
    const attempts = arr(turn.attempts);
    const showAttempts = attempts.length > 1 || attempts.some((a) => isObj(a) && (a.outcome !== 'ok' || a.resumed));
    const checks = arr(turn.checks);
    const failed = checks.filter((c) => isObj(c) && c.passed !== true).length;
    const more = [];
    if (isObj(turn.params) && Object.keys(turn.params).length) more.push(['params', turn.params]);
    const extra = extraShown(turn);
    if (Object.keys(extra).length) more.push(['extra', extra]);
    if (turn.response_id) more.push(['response id', turn.response_id]);
    return h('div', { class: 'aside' }, [
      h('div', { class: 'facts' }, [
        fact('latency', isNum(turn.latency_ms) ? fmtMs(turn.latency_ms) : null),
        fact('', usageText(turn.usage)),
        fact('finish', turn.finish_reason ? text(turn.finish_reason) : null),
        fact('attempts', attempts.length ? String(attempts.length) : null),
        turn.model && turn.model !== rec.model ? fact('model', text(turn.model)) : null,
      ]),
      showAttempts ? h('h4', null, 'Attempts') : null,
      showAttempts ? attempts.map((a, k) => attemptNode(a, k === attempts.length - 1)) : null,
      checks.length ? h('h4', null, 'Checks · ' + (failed ? failed + ' failed' : 'all passed')) : null,
      checks.map((c) => checkNode(c, flips ? flips(c) : null)),
      more.length ? h('details', { class: 'more' }, [
        h('summary', null, more.map((m) => m[0]).join(', ')),
        more.map(([label, value]) => h('pre', null, label + ': ' + (typeof value === 'string' ? value : JSON.stringify(value, null, 2)))),
      ]) : null,
    ]);
  }

  function chat(rec) {
    const messages = arr(rec.messages);
    const turns = turnsOf(rec).slice().sort((a, b) => (isInt(a.index) ? a.index : 0) - (isInt(b.index) ? b.index : 0));
    const byMessage = new Map();
    for (const turn of turns) if (isInt(turn.message_index)) byMessage.set(turn.message_index, turn);
    const used = new Set();
    const out = h('div', { class: 'chat', id: 'chat' });
    let loose = [];
    const flush = () => {
      if (loose.length) out.appendChild(h('div', { class: 'turn preamble' }, [h('div', { class: 'messages' }, loose), h('div')]));
      loose = [];
    };
    for (let k = 0; k < messages.length; k++) {
      const turn = byMessage.get(k);
      if (!turn) { loose.push(bubble(messages[k])); continue; }
      flush();
      used.add(turn);
      const answer = answerOf(rec, turn);
      const steps = stepNodes(rec, turn);
      const left = h('div', { class: 'messages' }, [
        h('div', { class: 'turn-label' }, 'Turn ' + ((isInt(turn.index) ? turn.index : 0) + 1)),
        bubble(messages[k]),
        steps.nodes,
        answer ? bubble(answer) : null,
        errorBox(turn.error, 'This turn failed'),
      ]);
      k = Math.max(steps.last, answer ? answerIndexOf(turn) : k);
      out.appendChild(h('div', { class: 'turn', 'data-turn': String(turn.index) }, [left, turnAside(turn, rec)]));
    }
    flush();
    for (const turn of turns) {
      if (used.has(turn)) continue;
      out.appendChild(h('div', { class: 'turn', 'data-turn': String(turn.index) }, [
        h('div', { class: 'messages' }, [
          h('div', { class: 'turn-label' }, 'Turn ' + ((isInt(turn.index) ? turn.index : 0) + 1)),
          h('div', { class: 'muted' }, 'Its messages are not in the history.'),
          errorBox(turn.error, 'This turn failed'),
        ]),
        turnAside(turn, rec),
      ]));
    }
    return out;
  }

  function conversationView(rec, label) {
    const totals = isObj(rec.totals) ? rec.totals : {};
    const params = isObj(rec.params) && Object.keys(rec.params).length ? JSON.stringify(rec.params) : '';
    return h('div', { id: 'conversation' }, [
      h('a', { class: 'back', href: '#', id: 'back' }, '← All conversations'),
      h('div', { class: 'conv-head' }, [h('h1', null, text(rec.id)), badge(text(rec.status) || 'unknown'), label ? h('span', { class: 'muted' }, label) : null]),
      h('div', { class: 'panel' }, dl([
        ['Source', text(rec.source)],
        ['Model', text(rec.model)],
        ['Endpoint', text(rec.base_url)],
        ['Parameters', params || '–'],
        ['Started', fmtTime(rec.started_at)],
        ['Finished', fmtTime(rec.finished_at)],
        ['Totals', plural(totals.turns, 'turn') + ' · ' + plural(totals.total_tokens, 'token') + ' · ' + plural(totals.attempts, 'attempt') + ' · ' + plural(totals.retries, 'retry', 'retries')],
        rec.group ? ['Repeat', text(rec.group) + ' #' + text(rec.repeat)] : null,
      ].filter(Boolean))),
      errorBox(rec.error, rec.status === 'interrupted' ? 'Interrupted' : 'Failed'),
      chat(rec),
    ]);
  }

  // -- comparison ----------------------------------------------------------------

  function tokenize(value) {
    return value.match(/\s+|[^\s]+/g) || [];
  }

  /* Word-level difference: common prefix and suffix, then a longest common
   * subsequence of the middle (or the whole middle as changed when too big). */
  function wordDiff(a, b) {
    const A = tokenize(a), B = tokenize(b);
    let pre = 0;
    while (pre < A.length && pre < B.length && A[pre] === B[pre]) pre++;
    let suf = 0;
    while (suf < A.length - pre && suf < B.length - pre && A[A.length - 1 - suf] === B[B.length - 1 - suf]) suf++;
    const x = A.slice(pre, A.length - suf), y = B.slice(pre, B.length - suf);
    const ops = [['=', A.slice(0, pre).join('')]];
    const n = x.length, m = y.length;
    if (n && m && n * m <= DIFF_CELLS) {
      const w = m + 1;
      const L = new Uint16Array((n + 1) * w);
      for (let i = n - 1; i >= 0; i--) {
        for (let j = m - 1; j >= 0; j--) {
          L[i * w + j] = x[i] === y[j] ? L[(i + 1) * w + j + 1] + 1 : Math.max(L[(i + 1) * w + j], L[i * w + j + 1]);
        }
      }
      let i = 0, j = 0;
      while (i < n && j < m) {
        if (x[i] === y[j]) { ops.push(['=', x[i]]); i++; j++; }
        else if (L[(i + 1) * w + j] >= L[i * w + j + 1]) ops.push(['-', x[i++]]);
        else ops.push(['+', y[j++]]);
      }
      while (i < n) ops.push(['-', x[i++]]);
      while (j < m) ops.push(['+', y[j++]]);
    } else {
      ops.push(['-', x.join('')], ['+', y.join('')]);
    }
    ops.push(['=', A.slice(A.length - suf).join('')]);
    const merged = [];
    for (const op of ops) {
      if (!op[1]) continue;
      const prev = merged[merged.length - 1];
      if (prev && prev[0] === op[0]) prev[1] += op[1];
      else merged.push([op[0], op[1]]);
    }
    return merged;
  }

  function diffBody(ops, side) {
    const body = h('div', { class: 'body' });
    for (const [kind, value] of ops) {
      if (kind === '=') body.appendChild(document.createTextNode(value));
      else if (kind === '-' && side === 'base') body.appendChild(h('del', { class: 'd' }, value));
      else if (kind === '+' && side === 'new') body.appendChild(h('ins', { class: 'd' }, value));
    }
    return body;
  }

  function sideOf(label, rec, turn, ops, flips) {
    if (!rec) return h('div', { class: 'side' }, h('div', { class: 'muted' }, 'Not in the ' + label + ' run.'));
    if (!turn) return h('div', { class: 'side' }, h('div', { class: 'muted' }, 'Turn not sent in the ' + label + ' run.'));
    const answer = answerOf(rec, turn);
    const steps = isInt(turn.message_index) ? stepNodes(rec, turn).nodes : [];
    let node = null;
    if (answer) {
      node = bubble(answer);
      if (ops) node.replaceChild(diffBody(ops, label), node.lastChild);
    }
    return h('div', { class: 'side', 'data-side': label }, [
      h('div', { class: 'side-head' }, [h('b', null, label), isNum(turn.latency_ms) ? fmtMs(turn.latency_ms) : null,
        usageText(turn.usage), turn.finish_reason ? text(turn.finish_reason) : null,
        arr(turn.attempts).length > 1 ? plural(arr(turn.attempts).length, 'attempt') : null].filter(Boolean).map((p) => h('span', null, p))),
      steps,
      node,
      errorBox(turn.error, 'This turn failed'),
      arr(turn.checks).length ? h('div', { class: 'flip' }, arr(turn.checks).map((c) => checkNode(c, flips(c)))) : null,
    ]);
  }

  /* The user message of a turn whose prompt differs between the runs: both, side by side,
   * with the words removed and added marked, so a changed conversation file is seen as such. */
  function promptChange(before, after) {
    const ops = wordDiff(contentText(before.content) || '', contentText(after.content) || '');
    const side = (label, message) => {
      const node = bubble(message);
      node.replaceChild(diffBody(ops, label), node.lastChild);
      return h('div', { class: 'side', 'data-side': label }, [h('div', { class: 'side-head' }, h('b', null, label + ' prompt')), node]);
    };
    return h('div', { class: 'prompt-change' }, [
      h('div', { class: 'muted' }, 'The prompt changed between the runs:'),
      h('div', { class: 'side-by-side' }, [side('base', before), side('new', after)]),
    ]);
  }

  function comparisonView(cd, base, fresh) {
    const baseTurns = new Map(turnsOf(base).map((t) => [t.index, t]));
    const newTurns = new Map(turnsOf(fresh).map((t) => [t.index, t]));
    const flipsFor = (turnIndex, side) => (check) => {
      const hit = arr(cd.checks).find((f) => f.turn === turnIndex && f.kind === text(check.kind)
        && JSON.stringify(f.expected) === JSON.stringify(check.expected) && JSON.stringify(f.scope) === JSON.stringify(check.scope));
      if (!hit) return null;
      if (hit.change === 'regressed' || hit.change === 'fixed') return hit.change;
      return side === 'new' && hit.change === 'added' ? 'added' : side === 'base' && hit.change === 'removed' ? 'removed' : null;
    };
    const preamble = arr(fresh.messages).slice(0, Math.min.apply(null, [arr(fresh.messages).length].concat(
      turnsOf(fresh).filter((t) => isInt(t.message_index)).map((t) => t.message_index))));
    const changed = new Map(arr(cd.turns).map((td) => [td.index, td]));
    const indexes = Array.from(new Set(Array.from(baseTurns.keys()).concat(Array.from(newTurns.keys()))))
      .filter(isInt).sort((a, b) => a - b);
    const rows = indexes.map((index) => {
      const bt = baseTurns.get(index), nt = newTurns.get(index);
      const source = nt || bt;
      const user = arr((nt ? fresh : base).messages)[source.message_index];
      const td = changed.get(index);
      const answered = Boolean(td && td.answer_changed), prompted = Boolean(td && td.prompt_changed);
      const toolStep = td && isInt(td.tools_step) ? td.tools_step : null;
      const ba = bt ? answerOf(base, bt) : null, na = nt ? answerOf(fresh, nt) : null;
      const ops = answered && ba && na ? wordDiff(contentText(ba.content) || '', contentText(na.content) || '') : null;
      const bu = bt ? arr(base.messages)[bt.message_index] : null;
      const latency = bt && nt && isNum(bt.latency_ms) && isNum(nt.latency_ms) ? nt.latency_ms - bt.latency_ms : null;
      const tokens = bt && nt && isObj(bt.usage) && isObj(nt.usage) ? usageTotal(nt.usage) - usageTotal(bt.usage) : null;
      return h('div', { class: 'cmp-turn' + (answered || prompted || toolStep !== null ? ' differs' : ''), 'data-turn': String(index) }, [
        h('div', { class: 'turn-label' }, ['Turn ' + (index + 1), prompted ? ' · the prompt changed' : '',
          toolStep !== null ? ' · tool calls differ at step ' + (toolStep + 1) : '',
          answered ? ' · answers differ' : ' · same answer',
          answered && isNum(td.similarity) ? ' · similarity ' + td.similarity.toFixed(3) : '',
          isNum(latency) ? ' · latency ' + signed(latency, fmtMs) : '',
          isNum(tokens) ? ' · tokens ' + signed(tokens, fmtInt) : '']),
        prompted && isObj(bu) && isObj(user) ? promptChange(bu, user) : user ? bubble(user) : null,
        h('div', { class: 'side-by-side' }, [
          sideOf('base', base, bt, ops, flipsFor(index, 'base')),
          sideOf('new', fresh, nt, ops, flipsFor(index, 'new')),
        ]),
      ]);
    });
    const flipped = arr(cd.checks).filter((c) => c.change === 'regressed' || c.change === 'fixed');
    return h('div', { id: 'conversation' }, [
      h('a', { class: 'back', href: '#', id: 'back' }, '← All conversations'),
      h('div', { class: 'conv-head' }, [h('h1', null, text(cd.id)), badge(text(cd.outcome)),
        h('span', { class: 'muted' }, 'status '), badge(text(cd.base_status)), '→', badge(text(cd.new_status))]),
      h('div', { class: 'panel' }, dl([
        ['Source', text(cd.source)],
        ['Model', cd.base_model === cd.new_model ? text(cd.new_model) : text(cd.base_model) + ' → ' + text(cd.new_model)],
        ['First different answer', isInt(cd.first_divergence) ? 'turn ' + (cd.first_divergence + 1) : 'none'],
        ['Prompts changed', arr(cd.turns).filter((t) => t.prompt_changed).map((t) => 'turn ' + (t.index + 1)).join(', ') || 'none'],
        ['Tokens', cd.tokens ? signed(cd.tokens.total_tokens, fmtInt) : '–'],
        ['Latency', signed(cd.latency_ms, fmtMs)],
      ])),
      errorBox(cd.base_error, 'Base'),
      errorBox(cd.new_error, 'New'),
      flipped.length ? panel('Checks that flipped', flipped.map((c) => h('div', { class: 'check ' + (c.change === 'fixed' ? 'pass' : 'fail') }, [
        h('div', { class: 'head' }, [badge(c.change, c.change === 'regressed' ? 'pass → fail' : 'fail → pass'), 'turn ' + (c.turn + 1), text(c.kind),
          c.scope ? h('span', { class: 'muted' }, '(' + text(c.scope) + ')') : null]),
        h('div', { class: 'kv' }, ['expected: ', h('b', null, text(c.expected))]),
        c.seen !== null && c.seen !== undefined ? h('div', { class: 'kv' }, ['seen: ', h('b', null, text(c.seen))]) : null,
        c.message ? h('div', { class: 'kv' }, ['why: ', h('b', null, text(c.message))]) : null,
      ]))) : null,
      h('div', { class: 'chat', id: 'chat' }, [
        preamble.length ? h('div', { class: 'messages' }, preamble.map(bubble)) : null,
      ].concat(rows)),
    ]);
  }

  function compareRow(cd, i) {
    const id = text(cd.id);
    return {
      i: i,
      cd: cd,
      id: id,
      source: text(cd.source),
      outcome: text(cd.outcome),
      rank: OUTCOMES.indexOf(cd.outcome) < 0 ? OUTCOMES.length : OUTCOMES.indexOf(cd.outcome),
      baseStatus: text(cd.base_status),
      newStatus: text(cd.new_status),
      first: isInt(cd.first_divergence) ? cd.first_divergence + 1 : null,
      flipped: arr(cd.checks).filter((c) => c.change === 'regressed' || c.change === 'fixed').length,
      dTokens: cd.tokens && isNum(cd.tokens.total_tokens) ? cd.tokens.total_tokens : null,
      dLatency: isNum(cd.latency_ms) ? cd.latency_ms : null,
      key: (id + '\n' + text(cd.source)).toLowerCase(),
      rec: compareIndex.fresh.get(id) || {},
      body: null,
    };
  }

  function regressionWhy(cd) {
    const parts = [];
    if (cd.base_status !== cd.new_status) parts.push(text(cd.base_status) + ' → ' + text(cd.new_status));
    const failing = arr(cd.checks).filter((c) => c.change === 'regressed');
    if (failing.length) parts.push(failing.map((c) => 'turn ' + (c.turn + 1) + ' ' + text(c.kind) + ' now fails').join(', '));
    if (isObj(cd.new_error) && cd.new_error.message) parts.push(text(cd.new_error.message));
    return parts.join(' · ');
  }

  function compareOverview(diff, base, fresh) {
    const summary = diff.summary || {};
    const conversations = arr(diff.conversations);
    const rows = conversations.map(compareRow);
    const regressions = rows.filter((r) => r.outcome === 'regressed');
    const counts = OUTCOMES.map((o) => [o, rows.filter((r) => r.outcome === o).length]).filter(([, n]) => n > 0);
    const table = filteredTable({
      id: 'conversations',
      rows: rows,
      placeholder: 'Search conversation id or file…',
      filterId: 'outcome-filter',
      filterLabel: 'Outcome',
      filterNoun: 'outcome',
      filterValues: counts,
      filterValue: (row) => row.outcome,
      empty: 'No conversation matches.',
      sort: { key: 'outcome', dir: 1 },
      open: (row) => go(row.id),
      columns: [
        { key: 'id', label: 'Conversation', width: '24%', value: (r) => r.id, render: (r) => r.id, tip: (r) => r.id + '\n' + r.source },
        { key: 'outcome', label: 'Outcome', width: '11%', value: (r) => r.rank, render: (r) => badge(r.outcome) },
        { key: 'base', label: 'Base status', width: '12%', value: (r) => r.baseStatus, render: (r) => badge(r.baseStatus) },
        { key: 'new', label: 'New status', width: '12%', value: (r) => r.newStatus, render: (r) => badge(r.newStatus) },
        { key: 'first', label: 'Differs from turn', num: true, width: '11%', value: (r) => r.first, render: (r) => (r.first === null ? '–' : String(r.first)) },
        { key: 'flipped', label: 'Checks flipped', num: true, width: '10%', value: (r) => r.flipped, render: (r) => fmtInt(r.flipped) },
        { key: 'tokens', label: 'Δ tokens', num: true, width: '10%', value: (r) => r.dTokens, render: (r) => signed(r.dTokens, fmtInt) },
        { key: 'latency', label: 'Δ latency', num: true, width: '10%', value: (r) => r.dLatency, render: (r) => signed(r.dLatency, fmtMs) },
      ],
    });
    const refList = (title, refs, id) => (arr(refs).length ? panel(title + ' (' + fmtInt(arr(refs).length) + ')', h('ul', { class: 'regressions', id: id },
      arr(refs).map((ref) => h('li', { onclick: () => go(text(ref.id)) }, [h('b', null, text(ref.id)), badge(text(ref.status)), h('span', { class: 'why' }, text(ref.source))])))) : null);
    const shownRegressions = regressions.slice().sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true })).slice(0, 500);
    const node = h('div', { id: 'overview' }, [
      h('h1', null, DATA.title),
      h('p', { class: 'subtitle' }, 'Comparison · base ' + text(base.source) + ' → new ' + text(fresh.source)),
      h('div', { class: 'tiles section', id: 'diff-summary' }, [
        tile('regressed', 'regressed', fmtInt(summary.regressed), null, summary.regressed ? 'bad' : 'ok'),
        tile('fixed', 'fixed', fmtInt(summary.fixed), null, summary.fixed ? 'ok' : ''),
        tile('changed', 'changed', fmtInt(summary.changed)),
        tile('same', 'same', fmtInt(summary.same)),
        tile('added', 'added', fmtInt(summary.added)),
        tile('removed', 'removed', fmtInt(summary.removed), summary.removed ? 'missing from new: regressions' : null, summary.removed ? 'bad' : ''),
      ]),
      panel('Regressions (' + fmtInt(regressions.length) + ')', regressions.length
        ? [h('ul', { class: 'regressions', id: 'regressions' }, shownRegressions.map((r) => h('li', { 'data-id': r.id, onclick: () => go(r.id) }, [
          h('b', null, r.id), badge('regressed'), h('span', { class: 'why' }, regressionWhy(r.cd)),
        ]))), regressions.length > shownRegressions.length ? h('p', { class: 'muted' }, 'The table below lists all of them.') : null]
        : h('p', { class: 'muted', id: 'regressions' }, 'No conversation regressed.'), { id: 'regressions-panel' }),
      refList('Only in base: missing from new, counted as regressions', diff.removed, 'removed'),
      panel('Conversations in both runs', table.nodes),
      refList('Only in new', diff.added, 'added'),
      h('div', { class: 'meta-grid section' }, [
        h('div', { class: 'panel', id: 'base-meta' }, [h('h2', null, 'Base run'), dl(metaPairs(base))]),
        h('div', { class: 'panel', id: 'new-meta' }, [h('h2', null, 'New run'), dl(metaPairs(fresh))]),
      ]),
      h('h2', { class: 'section' }, 'Base run'),
      totalTiles(base),
      h('div', { class: 'section' }, charts(base, 'base-chart-')),
      h('h2', { class: 'section' }, 'New run'),
      totalTiles(fresh),
      h('div', { class: 'section' }, charts(fresh, 'chart-')),
    ]);
    // The tiles of both runs share ids; keep the new run's as #totals.
    const tiles = node.querySelectorAll('#totals');
    if (tiles.length > 1) tiles[0].id = 'base-totals';
    return { node: node, paint: table.paint };
  }

  // -- routing ----------------------------------------------------------------

  const compareIndex = { base: new Map(), fresh: new Map(), diff: new Map() };
  let overview = null;
  let current = null;
  let savedScroll = 0;

  function go(id) {
    savedScroll = window.scrollY;
    location.hash = 'conv=' + encodeURIComponent(id);
  }

  function conversationFor(id) {
    if (DATA.mode === 'compare') {
      const cd = compareIndex.diff.get(id);
      if (cd) return comparisonView(cd, compareIndex.base.get(id) || {}, compareIndex.fresh.get(id) || {});
      if (compareIndex.fresh.has(id)) return conversationView(compareIndex.fresh.get(id), 'only in the new run');
      if (compareIndex.base.has(id)) return conversationView(compareIndex.base.get(id), 'only in the base run');
      return null;
    }
    const rec = compareIndex.fresh.get(id);
    return rec ? conversationView(rec, null) : null;
  }

  function route() {
    const match = /^#conv=(.*)$/.exec(location.hash);
    let view = null;
    if (match) {
      let id = null;
      try { id = decodeURIComponent(match[1]); } catch (e) { id = null; }
      view = id === null ? null : conversationFor(id);
    }
    if (current) { current.remove(); current = null; }
    if (view) {
      overview.node.hidden = true;
      current = view;
      app.appendChild(view);
      window.scrollTo(0, 0);
    } else {
      overview.node.hidden = false;
      overview.paint();
      window.scrollTo(0, savedScroll);
    }
  }

  function start() {
    const runs = arr(DATA.runs);
    const noscript = app.querySelector('noscript');
    if (noscript) noscript.remove();
    if (DATA.mode === 'compare') {
      const base = runs[0] || {}, fresh = runs[1] || {};
      compareIndex.base = byId(arr(base.conversations));
      compareIndex.fresh = byId(arr(fresh.conversations));
      arr(DATA.diff && DATA.diff.conversations).forEach((cd) => compareIndex.diff.set(text(cd.id), cd));
      overview = compareOverview(DATA.diff || {}, base, fresh);
    } else {
      const run = runs[0] || {};
      const records = arr(run.conversations).filter(isObj);
      compareIndex.fresh = byId(records);
      overview = runOverview(run, records.map(conversationRow));
    }
    app.appendChild(overview.node);
    window.addEventListener('hashchange', route);
    route();
    document.body.setAttribute('data-ready', 'true');
  }

  start();
})();
