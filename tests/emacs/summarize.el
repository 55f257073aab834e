;;; summarize.el --- Summarizing the URL at point, then following up  -*- lexical-binding: t; -*-

;;; Commentary:

;; Point is on a URL in prose ($EMACS_TEST_URL, followed by a full stop); M-x
;; assistant-summarize-url summarizes it into a chat buffer shown in another window,
;; with the stages in the echo area and the page's title as the buffer's heading.  A
;; follow-up question continues the stored conversation.

;;; Code:

(assistant-test-run
 (lambda ()
   (setq assistant-model (getenv "EMACS_TEST_MODEL"))
   (let ((url (getenv "EMACS_TEST_URL"))
         (before (length (assistant-test-messages))))
     (switch-to-buffer (get-buffer-create "notes.txt"))
     (insert "Read " url ". It is short.\n")
     (goto-char (point-min))
     (search-forward "://")
     (assistant-test-put "url_at_point" (assistant--url-at-point))
     (let* ((buf (call-interactively #'assistant-summarize-url)))
       (assistant-test-put "windows" (length (window-list)))
       (assistant-test-put "shown" (if (get-buffer-window buf) t :false))
       (assistant-test-wait 30 (assistant-test-idle buf) "the summary")
       (assistant-test-put "echoed" (seq-subseq (assistant-test-messages) before))
       (assistant-test-put "lines" (assistant-test-lines buf))
       (assistant-test-put "conversation"
                           (buffer-local-value 'assistant-chat-conversation-id buf))
       (assistant-test-send buf "[[reply:follow-up answer]] and the otters?")
       (assistant-test-wait 10 (assistant-test-idle buf) "the follow-up")
       (assistant-test-put "after" (buffer-local-value 'assistant-chat-conversation-id buf))
       (assistant-test-put "final_lines" (assistant-test-lines buf))))))

;;; summarize.el ends here
