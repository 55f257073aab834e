;;; attach.el --- Attaching files and buffers to a chat's next message  -*- lexical-binding: t; -*-

;;; Commentary:

;; From a file's buffer with no chat in sight, M-x assistant-attach-file RET (its
;; default: this file) and a PNG queue for the next `assistant-chat', which shows them
;; as "📎 name" lines and sends them with its first message.  With the chat shown in
;; another window, an unnamed buffer and a file buffer with unsaved changes go as their
;; text.  C-c C-a in the chat reads a file name.  `assistant-attach-clear' drops what is
;; queued.  One attached while an answer streams shows under the next "## You".  A
;; file queued before `assistant-ask-region' goes with the question.  A reopened
;; conversation shows its attachments.

;;; Code:

(defvar attach-dir (file-name-as-directory (getenv "ATTACH_DIR")))
(defvar attach-notes (concat attach-dir "notes.txt"))

(assistant-test-run
 (lambda ()
   (find-file attach-notes)
   (execute-kbd-macro (kbd "M-x assistant-attach-file RET RET"))
   (assistant-attach-file (concat attach-dir "dot.png"))
   (let ((buf (assistant-chat)))
     (assistant-test-put "queued_lines" (assistant-test-lines buf))
     (assistant-test-put "key" (symbol-name (with-current-buffer buf
                                               (key-binding (kbd "C-c C-a")))))
     (assistant-test-send buf "[[reply:seen]] look at these")
     (assistant-test-wait 10 (assistant-test-idle buf) "the first answer")
     (assistant-test-put "first_lines" (assistant-test-lines buf))
     (assistant-test-put "conversation"
                         (buffer-local-value 'assistant-chat-conversation-id buf))

     (select-window (split-window))
     (switch-to-buffer (get-buffer-create "draft"))
     (insert "draft FACT-11\n")
     (assistant-attach-buffer (current-buffer))
     (find-file attach-notes)
     (goto-char (point-min))
     (delete-region (point) (line-end-position))
     (insert "edited, not saved FACT-12")
     (assistant-attach-file attach-notes)
     (assistant-test-put "unsaved_queued" (assistant-test-lines buf))
     (select-window (get-buffer-window buf))
     (assistant-test-send buf "[[reply:ok]] drafts")
     (assistant-test-wait 10 (assistant-test-idle buf) "the second answer")

     (execute-kbd-macro (vconcat (kbd "C-c C-a C-a C-k") attach-notes (kbd "RET")))
     (assistant-test-put "before_clear" (assistant-test-lines buf))
     (assistant-attach-clear)
     (assistant-test-put "after_clear" (assistant-test-lines buf))
     (assistant-test-send buf "[[reply:plain]] nothing attached")
     (assistant-test-wait 10 (assistant-test-idle buf) "the third answer")

     (assistant-test-send buf "[[reply:busy answer]] busy") ; attached while it is on its way
     (assistant-attach-file (concat attach-dir "dot.png"))   ; shows after it
     (assistant-test-put "busy_lines" (assistant-test-lines buf))
     (assistant-test-wait 10 (assistant-test-idle buf) "the fourth answer")
     (assistant-test-put "after_busy" (assistant-test-lines buf))
     (assistant-test-send buf "[[reply:after]] with it")
     (assistant-test-wait 10 (assistant-test-idle buf) "the fifth answer")

     (switch-to-buffer (find-buffer-visiting attach-notes))
     (revert-buffer t t)
     (delete-other-windows)
     (assistant-attach-file attach-notes)
     (let ((ask (assistant-ask-region (point-min) (point-max)
                                      "[[reply:asked]] what is in it?")))
       (assistant-test-wait 10 (assistant-test-idle ask) "the ask's answer")
       (assistant-test-put "ask_lines" (assistant-test-lines ask))
       (assistant-open-conversation (buffer-local-value 'assistant-chat-conversation-id buf))
       (assistant-test-wait 10 (lambda () (not (memq (window-buffer) (list buf ask))))
                            "the reopened conversation")
       (assistant-test-put "reopened" (assistant-test-lines (window-buffer)))))))

;;; attach.el ends here
