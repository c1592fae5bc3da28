/* Skein Blog — plain JavaScript, no frameworks. Text from the API is only ever inserted
 * with textContent, never as HTML. */
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };

  // ---- API --------------------------------------------------------------------------

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  var served = { webPod: null, webVersion: null, wasPod: null, wasVersion: null };

  function noteServedBy(headers) {
    var web = headers.get('x-web-pod');
    if (web) {
      served.webPod = web;
      served.webVersion = headers.get('x-web-version');
    }
    var was = headers.get('x-was-pod');
    if (was) {
      served.wasPod = was;
      served.wasVersion = headers.get('x-was-version');
    }
    renderServedBy();
  }

  function renderServedBy() {
    var el = $('served-by');
    if (!el) return;
    el.textContent = '';
    el.appendChild(document.createTextNode('Served by web '));
    el.appendChild(code(served.webPod ? served.webPod + ' (' + (served.webVersion || '?') + ')' : '—'));
    el.appendChild(document.createTextNode(' · api '));
    el.appendChild(code(served.wasPod ? served.wasPod + ' (' + (served.wasVersion || '?') + ')' : '—'));
  }

  function code(text) {
    var c = document.createElement('code');
    c.textContent = text;
    return c;
  }

  function request(method, path, body) {
    var opts = { method: method, headers: { 'Accept': 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (res) {
      noteServedBy(res.headers);
      return res.text().then(function (text) {
        var data = null;
        if (text) {
          try { data = JSON.parse(text); } catch (e) { data = null; }
        }
        if (!res.ok) {
          throw new ApiError(res.status,
            (data && data.error) || 'http_' + res.status,
            (data && data.message) || describeStatus(res.status));
        }
        return { data: data, headers: res.headers, status: res.status };
      });
    }, function () {
      throw new ApiError(0, 'network_error', 'Could not reach the server. Check your connection and try again.');
    });
  }

  function describeStatus(status) {
    if (status === 404) return 'Not found.';
    if (status === 502) return 'The API server is unreachable right now.';
    if (status === 503) return 'The service is temporarily unavailable.';
    if (status === 504) return 'The API server took too long to answer.';
    return 'Request failed (HTTP ' + status + ').';
  }

  // ---- Helpers ----------------------------------------------------------------------

  function formatDate(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso || '';
    return d.toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric' }) +
      ', ' + d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  }

  function excerpt(text, max) {
    var t = (text || '').replace(/\s+/g, ' ').trim();
    return t.length > max ? t.slice(0, max).replace(/\s+\S*$/, '') + '…' : t;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'className') node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function showNotice(node, kind, message, retry) {
    if (!node) return;
    node.hidden = false;
    node.className = 'notice' + (kind ? ' ' + kind : '');
    node.textContent = message;
    if (retry) {
      node.appendChild(document.createTextNode(' '));
      var b = el('button', { className: 'button small', type: 'button', text: 'Retry' });
      b.addEventListener('click', retry);
      node.appendChild(b);
    }
  }

  function hideNotice(node) { if (node) { node.hidden = true; node.textContent = ''; } }

  function queryParam(name) {
    var m = new RegExp('[?&]' + name + '=([^&]*)').exec(window.location.search);
    return m ? decodeURIComponent(m[1].replace(/\+/g, ' ')) : null;
  }

  function pageCount(total, size) { return Math.max(1, Math.ceil(total / size)); }

  // ---- Home: the post list ------------------------------------------------------------

  var HOME_SIZE = 10;

  function home() {
    var page = parseInt(queryParam('page') || '1', 10);
    if (!(page >= 1)) page = 1;
    var list = $('posts');
    var status = $('status');

    function load() {
      hideNotice(status);
      list.setAttribute('aria-busy', 'true');
      request('GET', '/api/posts?page=' + (page - 1) + '&size=' + HOME_SIZE).then(function (r) {
        var posts = r.data || [];
        var total = parseInt(r.headers.get('x-total-count') || '0', 10) || 0;
        list.textContent = '';
        list.setAttribute('aria-busy', 'false');
        if (posts.length === 0) {
          list.appendChild(el('div', { className: 'card empty' }, [
            el('h2', { text: total > 0 ? 'Nothing on this page' : 'No posts yet' }),
            el('p', {}, [
              document.createTextNode(total > 0 ? 'Go back to the ' : 'Be the first to write one on the '),
              el('a', { href: total > 0 ? '/' : '/board', text: total > 0 ? 'first page' : 'Board' }),
              document.createTextNode('.')
            ])
          ]));
        }
        posts.forEach(function (p) {
          var href = '/posts/' + encodeURIComponent(p.id);
          list.appendChild(el('article', { className: 'card post-card' }, [
            el('h2', {}, [el('a', { href: href, text: p.title })]),
            el('p', { className: 'meta', text: 'By ' + p.author + ' · ' + formatDate(p.createdAt) }),
            p.content ? el('p', { className: 'excerpt', text: excerpt(p.content, 260) }) : null,
            el('a', { className: 'more', href: href, text: 'Read more →' })
          ]));
        });
        renderPager(total);
      }, function (err) {
        list.textContent = '';
        list.setAttribute('aria-busy', 'false');
        showNotice(status, 'error', 'Could not load posts: ' + err.message, load);
      });
    }

    function renderPager(total) {
      var pages = pageCount(total, HOME_SIZE);
      var pager = $('pager');
      pager.hidden = pages <= 1 && page === 1;
      var newer = $('newer');
      var older = $('older');
      newer.href = page > 2 ? '/?page=' + (page - 1) : '/';
      older.href = '/?page=' + (page + 1);
      newer.setAttribute('aria-disabled', page <= 1 ? 'true' : 'false');
      older.setAttribute('aria-disabled', page >= pages ? 'true' : 'false');
      $('page-info').textContent = 'Page ' + page + ' of ' + pages;
    }

    load();
  }

  // ---- One post -----------------------------------------------------------------------

  function postPage() {
    var m = /^\/posts\/(\d+)\/?$/.exec(window.location.pathname);
    var status = $('status');
    if (!m) { notFound(); return; }
    var id = m[1];

    function notFound() {
      $('post').hidden = true;
      $('missing').hidden = false;
      document.title = 'Post not found · Skein Blog';
    }

    function load() {
      hideNotice(status);
      request('GET', '/api/posts/' + id).then(function (r) {
        var p = r.data;
        document.title = p.title + ' · Skein Blog';
        $('post-title').textContent = p.title;
        $('post-author').textContent = 'By ' + p.author;
        $('post-date').textContent = formatDate(p.createdAt);
        $('post-date').setAttribute('datetime', p.createdAt);
        $('post-updated').textContent = p.updatedAt && p.updatedAt !== p.createdAt
          ? ' · updated ' + formatDate(p.updatedAt) : '';
        $('post-content').textContent = p.content;
        $('edit-link').href = '/board?edit=' + encodeURIComponent(p.id);
        var article = $('post');
        article.hidden = false;
        article.setAttribute('aria-busy', 'false');
      }, function (err) {
        if (err.status === 404) notFound();
        else showNotice(status, 'error', 'Could not load the post: ' + err.message, load);
      });
    }

    $('delete-button').addEventListener('click', function () {
      if (!window.confirm('Delete this post? This cannot be undone.')) return;
      request('DELETE', '/api/posts/' + id).then(function () {
        window.location.href = '/';
      }, function (err) {
        showNotice(status, 'error', 'Could not delete the post: ' + err.message);
      });
    });

    load();
  }

  // ---- Board: write, edit, delete -------------------------------------------------------

  var BOARD_SIZE = 20;

  function board() {
    var form = $('post-form');
    var title = $('title');
    var author = $('author');
    var content = $('content');
    var formStatus = $('form-status');
    var listStatus = $('status');
    var submit = $('submit-button');
    var cancel = $('cancel-button');
    var list = $('board-list');
    var editing = null;
    var page = 0;
    var total = 0;

    function updateCount() { $('title-count').textContent = String(title.value.length); }
    title.addEventListener('input', function () { updateCount(); title.removeAttribute('aria-invalid'); });

    var savedAuthor = null;
    try { savedAuthor = window.localStorage.getItem('blog.author'); } catch (e) { savedAuthor = null; }
    if (savedAuthor) author.value = savedAuthor;

    function setMode(post) {
      editing = post ? post.id : null;
      $('form-heading').textContent = post ? 'Edit post #' + post.id : 'Write a post';
      submit.textContent = post ? 'Save changes' : 'Publish';
      cancel.hidden = !post;
      highlight();
    }

    function resetForm() {
      form.reset();
      if (savedAuthor) author.value = savedAuthor;
      updateCount();
      setMode(null);
    }

    function startEdit(id) {
      hideNotice(formStatus);
      request('GET', '/api/posts/' + encodeURIComponent(id)).then(function (r) {
        var p = r.data;
        title.value = p.title;
        author.value = p.author;
        content.value = p.content;
        updateCount();
        setMode(p);
        title.focus();
      }, function (err) {
        showNotice(formStatus, 'error', err.status === 404 ? 'That post no longer exists.' : 'Could not load the post: ' + err.message);
        setMode(null);
      });
    }

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      hideNotice(formStatus);
      var body = { title: title.value.trim(), content: content.value, author: author.value.trim() };
      if (!body.title) {
        title.setAttribute('aria-invalid', 'true');
        showNotice(formStatus, 'error', 'Please give your post a title.');
        title.focus();
        return;
      }
      submit.disabled = true;
      var wasEditing = editing;
      var call = wasEditing
        ? request('PUT', '/api/posts/' + wasEditing, body)
        : request('POST', '/api/posts', body);
      call.then(function (r) {
        if (body.author) {
          savedAuthor = body.author;
          try { window.localStorage.setItem('blog.author', body.author); } catch (e) { /* private mode */ }
        }
        resetForm();
        var p = r.data;
        showNotice(formStatus, 'ok', wasEditing ? 'Saved.' : 'Published.');
        formStatus.appendChild(document.createTextNode(' '));
        formStatus.appendChild(el('a', { href: '/posts/' + encodeURIComponent(p.id), text: 'View post →' }));
        if (!wasEditing) page = 0;
        loadList();
      }, function (err) {
        showNotice(formStatus, 'error', err.message);
      }).then(function () { submit.disabled = false; });
    });

    cancel.addEventListener('click', function () { hideNotice(formStatus); resetForm(); });

    function remove(p) {
      if (!window.confirm('Delete "' + p.title + '"? This cannot be undone.')) return;
      request('DELETE', '/api/posts/' + encodeURIComponent(p.id)).then(function () {
        if (editing === p.id) resetForm();
        showNotice(listStatus, 'ok', 'Deleted "' + p.title + '".');
        if (page > 0 && total - 1 <= page * BOARD_SIZE) page -= 1;
        loadList(true);
      }, function (err) {
        showNotice(listStatus, 'error', 'Could not delete: ' + err.message);
      });
    }

    function highlight() {
      Array.prototype.forEach.call(list.children, function (li) {
        li.classList.toggle('editing', editing !== null && li.getAttribute('data-id') === String(editing));
      });
    }

    function loadList(keepNotice) {
      if (!keepNotice) hideNotice(listStatus);
      request('GET', '/api/posts?page=' + page + '&size=' + BOARD_SIZE).then(function (r) {
        var posts = r.data || [];
        total = parseInt(r.headers.get('x-total-count') || '0', 10) || 0;
        $('total').textContent = '(' + total + ')';
        list.textContent = '';
        if (posts.length === 0) {
          list.appendChild(el('li', { className: 'muted', text: 'No posts yet.' }));
        }
        posts.forEach(function (p) {
          var edit = el('button', { className: 'button small', type: 'button', text: 'Edit' });
          edit.addEventListener('click', function () { startEdit(p.id); });
          var del = el('button', { className: 'button small danger', type: 'button', text: 'Delete' });
          del.addEventListener('click', function () { remove(p); });
          list.appendChild(el('li', { 'data-id': String(p.id) }, [
            el('div', { className: 'item-main' }, [
              el('a', { className: 'item-title', href: '/posts/' + encodeURIComponent(p.id), text: p.title }),
              el('span', { className: 'meta', text: p.author + ' · ' + formatDate(p.createdAt) })
            ]),
            edit,
            del
          ]));
        });
        highlight();
        var pages = pageCount(total, BOARD_SIZE);
        $('pager').hidden = pages <= 1 && page === 0;
        $('newer').disabled = page <= 0;
        $('older').disabled = page + 1 >= pages;
        $('page-info').textContent = 'Page ' + (page + 1) + ' of ' + pages;
      }, function (err) {
        list.textContent = '';
        showNotice(listStatus, 'error', 'Could not load posts: ' + err.message, function () { loadList(); });
      });
    }

    $('newer').addEventListener('click', function () { if (page > 0) { page -= 1; loadList(); } });
    $('older').addEventListener('click', function () { page += 1; loadList(); });

    updateCount();
    loadList();
    var editId = queryParam('edit');
    if (editId && /^\d+$/.test(editId)) startEdit(editId);
  }

  // ---- Pages without API calls still show which web pod served them ---------------------

  function pingWeb() {
    fetch('/health', { method: 'GET', cache: 'no-store' }).then(function (res) {
      noteServedBy(res.headers);
    }, function () { /* offline: leave the footer as it is */ });
  }

  var pages = { home: home, post: postPage, board: board };
  var run = pages[document.body.getAttribute('data-page')];
  renderServedBy();
  if (run) run(); else pingWeb();
})();
