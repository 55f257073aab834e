;;; conversations.el --- Picking a stored conversation and continuing it  -*- lexical-binding: t; -*-

;;; Commentary:

;; M-x assistant-conversations offers the stored conversations through
;; `completing-read' (here a `completing-read-function' that notes the candidates in
;; the order shown and picks the first, as a user pressing RET would); the pick opens
;; as a chat buffer with its messages, and a new message continues it.

;;; Code:

(assistant-test-run
 (lambda ()
   (let ((offered nil) (prompt nil))
     (setq completing-read-function
           (lambda (p table &rest _)
             (let* ((all (all-completions "" table))
                    (sort (completion-metadata-get
                           (completion-metadata "" table nil) 'display-sort-function)))
               (setq prompt p offered (if sort (funcall sort all) all))
               (car offered))))
     (call-interactively #'assistant-conversations)
     (assistant-test-wait 10 (lambda () (cl-some #'assistant-chat-p (buffer-list)))
                          "a chat buffer")
     (let ((buf (cl-find-if #'assistant-chat-p (buffer-list))))
       (assistant-test-put "prompt" prompt)
       (assistant-test-put "offered" (vconcat offered))
       (assistant-test-put "opened" (buffer-local-value 'assistant-chat-conversation-id buf))
       (assistant-test-put "lines" (assistant-test-lines buf))
       (assistant-test-send buf "[[reply:continued]] go on")
       (assistant-test-wait 10 (assistant-test-idle buf) "the answer")
       (assistant-test-put "after" (buffer-local-value 'assistant-chat-conversation-id buf))))))

;;; conversations.el ends here
