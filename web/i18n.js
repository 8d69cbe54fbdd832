// tongbu — page texts in Chinese (default) and English.
// Elements carry data-i18n="key" (textContent), data-i18n-placeholder, data-i18n-title or
// data-i18n-aria-label; dynamic texts call tongbuI18n.t(key, params). The choice is kept in
// localStorage under "tongbu.lang".
(function () {
  'use strict';

  var DICT = {
    zh: {
      lang_switch: 'English',
      app_name: '同步课堂',
      teacher_page_title: '同步课堂 · 主讲端',
      classroom_page_title: '同步课堂 · 听讲端',
      // connection
      st_connecting: '正在连接…',
      st_joined: '已连接',
      st_reconnecting: '连接中断，{s} 秒后重新连接…',
      st_reconnecting_now: '连接中断，正在重新连接…',
      st_media_connecting: '正在建立音视频连接…',
      st_media_ok: '音视频已连接',
      st_media_failed: '音视频连接失败，正在重试…',
      // teacher
      start_heading: '开始上课',
      lesson_title_label: '课程名称',
      lesson_title_placeholder: '例如：三年级数学 · 分数的初步认识',
      invite_label: '邀请的教室',
      start_button: '开始上课',
      start_need_title: '请填写课程名称。',
      start_need_classroom: '请至少选择一个教室。',
      no_invitable: '没有可邀请的教室。',
      invites_heading: '加入方式',
      invite_code: '课堂码',
      copy: '复制',
      copied: '已复制',
      copy_failed: '复制失败，请手动选择',
      classrooms_heading: '听讲教室',
      my_preview: '本机画面',
      mute_mic: '关闭麦克风',
      unmute_mic: '打开麦克风',
      mic_muted: '麦克风已关闭',
      end_lesson: '下课',
      confirm_end: '确定结束本节课吗？所有教室都会断开。',
      call_on: '请上台',
      send_back: '请回座',
      lower_hand: '放下举手',
      hand_raised: '举手',
      on_stage: '上台中',
      connected: '在线',
      not_connected: '未连接',
      waiting_video: '等待画面…',
      lesson_ended_teacher: '本节课已结束。可以开始新的一节课。',
      quality_good: '画面流畅',
      quality_poor: '画面卡顿',
      quality_none: '无画面',
      // classroom
      code_heading: '输入课堂码',
      code_hint: '请输入老师给的 6 位数字课堂码。',
      code_placeholder: '6 位数字',
      join_button: '进入课堂',
      code_invalid_format: '课堂码是 6 位数字。',
      teacher_video: '主讲老师',
      on_stage_video: '上台教室：{name}',
      you_are_on_stage: '本教室正在上台，全体教室都能看到和听到',
      raise_hand: '举手',
      lower_my_hand: '放下手',
      hand_is_raised: '已举手，等待老师点名',
      enable_sound: '点击开启声音',
      teacher_away: '主讲老师暂时断开，请稍候…',
      waiting_teacher_video: '正在等待老师的画面…',
      video_paused: '网络较慢，视频暂停，声音继续。网络好转后会自动恢复。',
      link_dropped: '网络连接中断，正在自动重新进入课堂…',
      lesson_ended: '本节课已结束，谢谢大家！',
      lesson_ended_shutdown: '服务器正在维护，本节课已结束。',
      replaced: '本教室已在另一台电脑或窗口打开，这里已断开。',
      no_lesson: '现在没有正在进行的课。',
      camera_failed: '无法打开摄像头或麦克风，只能看和听。',
      // errors
      err_bad_code: '课堂码不正确或已过期，请核对后重新输入。',
      err_bad_token: '链接无效或已过期，请向老师索取新的课堂码。',
      err_rate_limited: '尝试次数过多，请稍后再试。',
      err_forbidden: '没有权限执行此操作。',
      err_no_lesson: '现在没有正在进行的课。',
      err_lesson_active: '已经有一节课正在进行。',
      err_unknown_classroom: '未知的教室。',
      err_bad_sdp: '音视频协商失败。',
      err_unsupported_version: '页面版本过旧，请刷新页面。',
      err_media_lost: '音视频连接中断，正在重新连接…',
      err_idle_timeout: '连接超时，正在重新连接…',
      err_internal: '服务器内部错误，正在重新连接…',
      err_generic: '出错了：{msg}'
    },
    en: {
      lang_switch: '中文',
      app_name: 'Tongbu Classroom',
      teacher_page_title: 'Tongbu · Teacher',
      classroom_page_title: 'Tongbu · Classroom',
      st_connecting: 'Connecting…',
      st_joined: 'Connected',
      st_reconnecting: 'Connection lost, reconnecting in {s} s…',
      st_reconnecting_now: 'Connection lost, reconnecting…',
      st_media_connecting: 'Setting up audio and video…',
      st_media_ok: 'Audio and video connected',
      st_media_failed: 'Audio/video connection failed, retrying…',
      start_heading: 'Start a lesson',
      lesson_title_label: 'Lesson title',
      lesson_title_placeholder: 'e.g. Grade 3 maths · Fractions',
      invite_label: 'Invite classrooms',
      start_button: 'Start lesson',
      start_need_title: 'Please enter a lesson title.',
      start_need_classroom: 'Please choose at least one classroom.',
      no_invitable: 'No classrooms to invite.',
      invites_heading: 'How to join',
      invite_code: 'Code',
      copy: 'Copy',
      copied: 'Copied',
      copy_failed: 'Copy failed, select it by hand',
      classrooms_heading: 'Classrooms',
      my_preview: 'My camera',
      mute_mic: 'Mute microphone',
      unmute_mic: 'Unmute microphone',
      mic_muted: 'Microphone is off',
      end_lesson: 'End lesson',
      confirm_end: 'End this lesson? Every classroom will be disconnected.',
      call_on: 'Call on',
      send_back: 'Send back',
      lower_hand: 'Lower hand',
      hand_raised: 'Hand up',
      on_stage: 'On stage',
      connected: 'Online',
      not_connected: 'Not connected',
      waiting_video: 'Waiting for video…',
      lesson_ended_teacher: 'The lesson has ended. You can start a new one.',
      quality_good: 'Smooth video',
      quality_poor: 'Choppy video',
      quality_none: 'No video',
      code_heading: 'Enter the class code',
      code_hint: 'Type the 6-digit code your teacher gave you.',
      code_placeholder: '6 digits',
      join_button: 'Join',
      code_invalid_format: 'The code has 6 digits.',
      teacher_video: 'Teacher',
      on_stage_video: 'On stage: {name}',
      you_are_on_stage: 'Your classroom is on stage: everyone sees and hears you',
      raise_hand: 'Raise hand',
      lower_my_hand: 'Lower hand',
      hand_is_raised: 'Hand raised, waiting for the teacher',
      enable_sound: 'Click to enable sound',
      teacher_away: 'The teacher is briefly disconnected, please wait…',
      waiting_teacher_video: 'Waiting for the teacher\'s video…',
      video_paused: 'Slow network: video paused, sound continues. It resumes by itself.',
      link_dropped: 'Connection lost, re-joining the lesson automatically…',
      lesson_ended: 'The lesson has ended. Thank you!',
      lesson_ended_shutdown: 'The server is under maintenance; the lesson has ended.',
      replaced: 'This classroom was opened on another computer or window; this one is disconnected.',
      no_lesson: 'There is no lesson right now.',
      camera_failed: 'Cannot open the camera or microphone: watching and listening only.',
      err_bad_code: 'Wrong or expired code. Please check it and try again.',
      err_bad_token: 'This link is invalid or has expired. Ask the teacher for a new code.',
      err_rate_limited: 'Too many attempts. Please wait a moment and try again.',
      err_forbidden: 'You are not allowed to do that.',
      err_no_lesson: 'There is no lesson right now.',
      err_lesson_active: 'A lesson is already running.',
      err_unknown_classroom: 'Unknown classroom.',
      err_bad_sdp: 'Audio/video negotiation failed.',
      err_unsupported_version: 'This page is outdated, please reload it.',
      err_media_lost: 'Audio/video connection lost, reconnecting…',
      err_idle_timeout: 'Connection timed out, reconnecting…',
      err_internal: 'Server error, reconnecting…',
      err_generic: 'Error: {msg}'
    }
  };

  var KEY = 'tongbu.lang';
  var lang = 'zh';
  try {
    var saved = window.localStorage.getItem(KEY);
    if (saved === 'en' || saved === 'zh') lang = saved;
  } catch (e) { /* storage may be disabled */ }

  var listeners = [];

  function t(key, params) {
    var s = (DICT[lang] && DICT[lang][key]);
    if (s === undefined) s = DICT.zh[key];
    if (s === undefined) return key;
    if (params) {
      s = s.replace(/\{(\w+)\}/g, function (m, name) {
        return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m;
      });
    }
    return s;
  }

  function apply(root) {
    root = root || document;
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    var nodes = root.querySelectorAll('[data-i18n]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = t(nodes[i].getAttribute('data-i18n'));
    nodes = root.querySelectorAll('[data-i18n-placeholder]');
    for (i = 0; i < nodes.length; i++) nodes[i].placeholder = t(nodes[i].getAttribute('data-i18n-placeholder'));
    nodes = root.querySelectorAll('[data-i18n-title]');
    for (i = 0; i < nodes.length; i++) nodes[i].title = t(nodes[i].getAttribute('data-i18n-title'));
    var titleKey = document.body && document.body.getAttribute('data-title-key');
    if (titleKey) document.title = t(titleKey);
  }

  function setLang(l) {
    if (l !== 'zh' && l !== 'en') return;
    lang = l;
    try { window.localStorage.setItem(KEY, l); } catch (e) { /* ignore */ }
    apply(document);
    for (var i = 0; i < listeners.length; i++) {
      try { listeners[i](lang); } catch (e) { console.error(e); }
    }
  }

  function onChange(fn) { listeners.push(fn); }

  /** A button that switches between the two languages. */
  function bindSwitch(button) {
    button.addEventListener('click', function () { setLang(lang === 'zh' ? 'en' : 'zh'); });
  }

  /** Human sentence for a server error message. */
  function errorText(err) {
    var key = 'err_' + (err && err.code);
    if (DICT.zh[key] !== undefined) return t(key);
    return t('err_generic', { msg: (err && (err.message || err.code)) || '?' });
  }

  window.tongbuI18n = {
    t: t,
    apply: apply,
    setLang: setLang,
    lang: function () { return lang; },
    onChange: onChange,
    bindSwitch: bindSwitch,
    errorText: errorText
  };
})();
